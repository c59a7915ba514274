module github.com/godist/dist

go 1.26.8

require (
	github.com/fxamacker/cbor/v2 v2.9.6
	github.com/peterh/liner v1.2.3
	github.com/traefik/yaegi v0.16.1
	github.com/vbauerster/mpb/v8 v8.9.3
	golang.org/x/sys v0.48.0
)

require (
	github.com/VividCortex/ewma v1.2.0 // indirect
	github.com/acarl005/stripansi v0.0.0-20180116102854-5a71ef0e047d // indirect
	github.com/clipperhouse/uax29/v2 v2.7.0 // indirect
	github.com/mattn/go-runewidth v0.0.31 // indirect
	github.com/rivo/uniseg v0.4.7 // indirect
	github.com/x448/float16 v0.8.4 // indirect
)
