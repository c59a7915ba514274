package main

import (
	"bytes"
	"fmt"
	"go/scanner"
	"go/token"
	"strconv"
	"strings"
	"unicode"
)

// inputComplete reports whether src, the lines typed so far, form a whole entry. An entry goes
// on while a bracket, brace or parenthesis is open, a raw string or block comment is
// unterminated, or the last token cannot end a Go statement (a binary operator, a comma, a
// dot, an assignment): the cases where Go's parser would say "unexpected EOF". For a command
// (":name …") only open brackets, strings and comments continue the entry. Anything else is
// complete, even if it is wrong: the evaluator reports the error, which is better than a prompt
// that waits for input that cannot fix it.
func inputComplete(src string) bool {
	fset := token.NewFileSet()
	file := fset.AddFile("", fset.Base(), len(src))
	unterminated := false
	var s scanner.Scanner
	s.Init(file, []byte(src), func(_ token.Position, msg string) {
		if strings.Contains(msg, "not terminated") {
			unterminated = true
		}
	}, scanner.ScanComments)
	depth := 0
	last := token.ILLEGAL
	for {
		_, tok, lit := s.Scan()
		if tok == token.EOF {
			break
		}
		switch tok {
		case token.LPAREN, token.LBRACK, token.LBRACE:
			depth++
		case token.RPAREN, token.RBRACK, token.RBRACE:
			depth--
		case token.COMMENT:
			// A comment ends nothing and continues nothing.
			continue
		case token.SEMICOLON:
			if lit == "\n" {
				// Inserted by the scanner at a line end: not something the user typed.
				continue
			}
		}
		last = tok
	}
	if unterminated {
		return false
	}
	if depth != 0 {
		// Open: go on. Over-closed: no more input can fix it, so let the evaluator say why.
		return depth < 0
	}
	// A command's arguments are not all Go (a host pattern may end in '.'): only open brackets
	// continue one.
	if t := strings.TrimSpace(src); t != "" && (t[0] == ':' || t[0] == '@') {
		return true
	}
	return !continues(last)
}

// continues reports whether a line ending in tok cannot end a statement, so that the entry
// must go on. Go's own rule is the same: no semicolon is inserted after these tokens.
func continues(tok token.Token) bool {
	switch tok {
	case token.COMMA, token.PERIOD, token.ASSIGN, token.DEFINE, token.ARROW, token.COLON:
		return true
	}
	if tok.IsOperator() && tok.Precedence() > 0 {
		return true // binary operators: + - * / % & | ^ << >> &^ && || == != < <= > >=
	}
	if tok >= token.ADD_ASSIGN && tok <= token.AND_NOT_ASSIGN {
		return true
	}
	return false
}

// splitWord returns the first field of s and the rest, trimmed. The field ends at white
// space outside brackets, so that a pid list written as a Go expression ([]int{2, 3}) is one
// field.
func splitWord(s string) (word, rest string) {
	s = strings.TrimSpace(s)
	depth := 0
	for i, r := range s {
		switch r {
		case '(', '[', '{':
			depth++
		case ')', ']', '}':
			depth--
		}
		if depth <= 0 && unicode.IsSpace(r) {
			return s[:i], strings.TrimSpace(s[i:])
		}
	}
	return s, ""
}

// splitAssign splits "TARGET = EXPR" at its first '=' that is an assignment: outside brackets
// and strings, and not part of ==, !=, <=, >=, := or op=.
func splitAssign(s string) (target, expr string, ok bool) {
	fset := token.NewFileSet()
	file := fset.AddFile("", fset.Base(), len(s))
	var sc scanner.Scanner
	sc.Init(file, []byte(s), nil, 0)
	depth := 0
	for {
		pos, tok, _ := sc.Scan()
		switch tok {
		case token.EOF:
			return "", "", false
		case token.LPAREN, token.LBRACK, token.LBRACE:
			depth++
		case token.RPAREN, token.RBRACK, token.RBRACE:
			depth--
		case token.ASSIGN:
			if depth == 0 {
				off := file.Offset(pos)
				return strings.TrimSpace(s[:off]), strings.TrimSpace(s[off+1:]), true
			}
		}
	}
}

// parsePids parses a literal pid list: "3", "2,3,4", "2:4" (Julia's range, inclusive),
// "[2,3]", or a word: "all" or "procs" (every process, the driver included), "workers". It
// reports ok=false when s is none of these, so that the caller can evaluate it as a Go
// expression instead.
func parsePids(s string, procs, workers []int) (pids []int, ok bool, err error) {
	switch s {
	case "all", "procs":
		return procs, true, nil
	case "workers":
		return workers, true, nil
	}
	body := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if body == "" {
		return nil, false, nil
	}
	for _, part := range strings.Split(body, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, ":")
		a, err1 := strconv.Atoi(lo)
		if err1 != nil {
			return nil, false, nil
		}
		b := a
		if isRange {
			var err2 error
			if b, err2 = strconv.Atoi(hi); err2 != nil {
				return nil, false, nil
			}
		}
		if b < a {
			return nil, true, fmt.Errorf("empty pid range %q", part)
		}
		if b-a > 1<<16 {
			return nil, true, fmt.Errorf("pid range %q too large", part)
		}
		for p := a; p <= b; p++ {
			pids = append(pids, p)
		}
	}
	return pids, true, nil
}

// oneLine joins the lines of a multi-line entry into one line that means the same to Go, for
// the history (which liner keeps one line per entry): a newline where Go inserts a semicolon
// becomes "; ", any other newline a space, and line comments are dropped (they would swallow
// what follows).
func oneLine(src string) string {
	if !strings.Contains(src, "\n") {
		return src
	}
	fset := token.NewFileSet()
	file := fset.AddFile("", fset.Base(), len(src))
	var s scanner.Scanner
	s.Init(file, []byte(src), nil, scanner.ScanComments)
	semi := map[int]bool{} // offsets of newlines where Go inserts a semicolon
	drop := map[int]int{}  // line comment start offset → length
	for {
		pos, tok, lit := s.Scan()
		if tok == token.EOF {
			break
		}
		off := file.Offset(pos)
		switch {
		case tok == token.SEMICOLON && lit == "\n":
			semi[off] = true
		case tok == token.COMMENT && strings.HasPrefix(lit, "//"):
			drop[off] = len(lit)
		}
	}
	var b []byte
	for i := 0; i < len(src); i++ {
		if n, ok := drop[i]; ok {
			i += n - 1
			continue
		}
		if src[i] != '\n' {
			b = append(b, src[i])
			continue
		}
		b = bytes.TrimRight(b, " \t")
		if semi[i] {
			b = append(b, ';')
		}
		b = append(b, ' ')
		// Indentation of the next line adds nothing on one line.
		for i+1 < len(src) && (src[i+1] == ' ' || src[i+1] == '\t') {
			i++
		}
	}
	return strings.TrimRight(string(b), "; ")
}
