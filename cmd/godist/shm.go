package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/godist/dist/shm"
)

// runShm lists or removes named shared-memory segments: a process that crashed leaves its
// named segments in /dev/shm, and `godist shm clean` removes those whose creator is gone.
func runShm(args []string, w io.Writer) int {
	fs := flag.NewFlagSet("shm", flag.ContinueOnError)
	prefix := fs.String("prefix", shm.DefaultPrefix, "segment name prefix")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: godist shm [-prefix P] ls|clean")
		return 2
	}
	switch fs.Arg(0) {
	case "ls":
		infos, err := shm.List(*prefix)
		if err != nil {
			fmt.Fprintln(os.Stderr, "godist shm ls:", err)
			return 1
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSIZE\tCREATOR\tALIVE\tPATH")
		for _, i := range infos {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%v\t%s\n", i.Name, i.Size, i.CreatorPid, i.CreatorAlive, i.Path)
		}
		tw.Flush()
		return 0
	case "clean":
		removed, err := shm.Clean(*prefix)
		for _, p := range removed {
			fmt.Fprintln(w, "removed", p)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "godist shm clean:", err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(os.Stderr, "godist shm: unknown command %q (want ls or clean)\n", fs.Arg(0))
	return 2
}
