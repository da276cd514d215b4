package trace

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	_ "embed"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// SampleName is the Workload.Name of the embedded sample.
const SampleName = "planetlab:20110303"

// The PlanetLab day 20110303 (1052 VMs) as a stored zip inside gzip: archive/zip
// serves it as an fs.FS for ReadPlanetLab, and gzip compresses across files, which
// per-file zip deflate does not. Regenerate with sample/gen.go.
//
//go:embed sample/planetlab-20110303.zip.gz
var sampleArchive []byte

// Sample returns the embedded PlanetLab day 20110303, read by ReadPlanetLab.
// Every call returns a fresh Workload.
func Sample() (*Workload, error) {
	zr, err := gzip.NewReader(bytes.NewReader(sampleArchive))
	if err != nil {
		return nil, fmt.Errorf("embedded sample: %w", err)
	}
	// gzip's trailer holds the unpacked size; sizing the buffer saves io.ReadAll's regrowth.
	n := binary.LittleEndian.Uint32(sampleArchive[len(sampleArchive)-4:])
	raw := bytes.NewBuffer(make([]byte, 0, n+bytes.MinRead))
	if _, err := raw.ReadFrom(zr); err != nil {
		return nil, fmt.Errorf("embedded sample: %w", err)
	}
	z, err := zip.NewReader(bytes.NewReader(raw.Bytes()), int64(raw.Len()))
	if err != nil {
		return nil, fmt.Errorf("embedded sample: %w", err)
	}
	return ReadPlanetLab(z, "20110303")
}

// Specs lists the accepted forms of a Load spec.
const Specs = `"" / "sample" / "planetlab" (the embedded sample), "planetlab:<dir>", "bitbrains:<dir>", "csv:<file>" or "csv:<file>?step=<seconds>"`

// Load reads a workload named by spec:
//
//	"", "sample", "planetlab"  the embedded PlanetLab sample (see Sample)
//	planetlab:<dir>            a PlanetLab day folder (ReadPlanetLab)
//	bitbrains:<dir>            a Bitbrains folder of <n>.csv (ReadBitbrains)
//	csv:<file>[?step=<s>]      a generic CSV trace (ReadCSV); the step is inferred if absent
//
// Errors name files as spec does.
func Load(spec string) (*Workload, error) {
	switch spec {
	case "", "sample", "planetlab":
		return Sample()
	}
	kind, arg, ok := strings.Cut(spec, ":")
	if ok && arg == "" {
		return nil, fmt.Errorf("trace %q: missing path after %q; want %s", spec, kind+":", Specs)
	}
	switch kind {
	case "planetlab":
		if ok {
			return readPlanetLab(dirFS(arg), ".", arg)
		}
	case "bitbrains":
		if ok {
			return readBitbrains(dirFS(arg), ".", arg)
		}
	case "csv":
		if ok {
			file, step, err := csvSpec(arg)
			if err != nil {
				return nil, fmt.Errorf("trace %q: %w", spec, err)
			}
			return readCSV(dirFS(filepath.Dir(file)), filepath.Base(file), file, step)
		}
	}
	return nil, fmt.Errorf("unknown trace %q: want %s", spec, Specs)
}

// csvSpec splits an optional "?step=<seconds>" off a CSV path.
func csvSpec(arg string) (file string, step int64, err error) {
	file, q, ok := strings.Cut(arg, "?")
	if !ok {
		return arg, 0, nil
	}
	v, ok := strings.CutPrefix(q, "step=")
	if !ok {
		return "", 0, fmt.Errorf("unknown option %q: want ?step=<seconds>", q)
	}
	step, err = strconv.ParseInt(v, 10, 64)
	if err != nil || step <= 0 || step > maxTimestamp {
		return "", 0, fmt.Errorf("step %q is not a positive whole number of seconds", v)
	}
	return file, step, nil
}
