// Package archtest holds no code: its test checks that the packages of godist import each
// other only as docs/ARCHITECTURE.md allows, with `go list -json`.
package archtest
