//go:build ignore

// primes is a godist script: it counts the primes below a limit on all workers at once, as
// `julia -p 4 -L primes.jl` would.
//
//	go run ./cmd/godist run -p 4 examples/scripts/primes.go [LIMIT]
//
// godist run loads the declarations of this file (limit, countPrimes) into the interpreter
// of every process, then runs main on the driver. main hands each worker a block of [2, limit)
// with sow, counts the primes of every block at once with reap, and adds the counts up. The
// build constraint keeps the go command from building the file: it is a script, whose
// functions workers(), sow and reap come from godist's interpreter.
package main

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

var limit = 2_000_000

// countPrimes counts the primes in [lo, hi) with a sieve of Eratosthenes over that segment
// alone, crossing out multiples of the primes up to √hi. (The interpreter is Go as of 1.20:
// no min and max builtins.)
func countPrimes(lo, hi int) int {
	if lo < 2 {
		lo = 2
	}
	if hi <= lo {
		return 0
	}
	r := int(math.Sqrt(float64(hi)))
	small := make([]bool, r+1)
	var base []int
	for i := 2; i <= r; i++ {
		if !small[i] {
			base = append(base, i)
			for j := i * i; j <= r; j += i {
				small[j] = true
			}
		}
	}
	composite := make([]bool, hi-lo)
	for _, p := range base {
		start := (lo + p - 1) / p * p // the first multiple of p in the segment
		if start < p*p {
			start = p * p // smaller multiples have a smaller prime factor
		}
		for j := start; j < hi; j += p {
			composite[j-lo] = true
		}
	}
	n := 0
	for _, c := range composite {
		if !c {
			n++
		}
	}
	return n
}

func main() {
	if len(args) > 0 {
		n, err := strconv.Atoi(args[0])
		if err != nil || n < 2 {
			panic("usage: primes.go [LIMIT ≥ 2]")
		}
		limit = n
	}
	start := time.Now()
	ws := workers()
	for i, p := range ws {
		lo := 2 + (limit-2)*i/len(ws)
		hi := 2 + (limit-2)*(i+1)/len(ws)
		sow([]int{p}, "block", fmt.Sprintf("[2]int{%d, %d}", lo, hi))
	}
	counts := reap(ws, "countPrimes(block[0], block[1])")
	blocks := reap(ws, "block")
	total := 0
	for _, p := range ws {
		b := blocks[p].([2]int)
		fmt.Printf("worker %d: %d primes in [%d, %d)\n", p, counts[p], b[0], b[1])
		total += counts[p].(int)
	}
	fmt.Printf("%d primes below %d, counted by %d workers in %.2fs\n", total, limit, len(ws), time.Since(start).Seconds())
}
