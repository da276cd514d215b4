package trace

import (
	"fmt"
	"io/fs"
)

// PlanetLabStep is the sampling interval of the PlanetLab traces, in seconds.
const PlanetLabStep = 300

// ReadPlanetLab reads a PlanetLab day: every file in dir (but hidden files and
// folders) is one VM, named by the file and ordered bytewise, with one integer CPU
// percent (0..100) per line. All files must have the same number of samples; blank
// lines may only trail.
func ReadPlanetLab(fsys fs.FS, dir string) (*Workload, error) {
	return readPlanetLab(fsys, dir, dir)
}

// readPlanetLab names files in errors and the workload after label, not dir, so that
// Load can report OS paths.
func readPlanetLab(fsys fs.FS, dir, label string) (*Workload, error) {
	names, err := listDir(fsys, dir, label, "")
	if err != nil {
		return nil, err
	}
	w := &Workload{
		Name: "planetlab:" + baseName(label),
		Kind: "planetlab",
		Step: PlanetLabStep,
		VMs:  make([]Series, len(names)),
	}
	err = forEach(len(names), func(i int) error {
		file := joinLabel(label, names[i])
		data, err := fs.ReadFile(fsys, joinLabel(dir, names[i]))
		if err != nil {
			return fsErr(file, err)
		}
		cpu, err := parsePlanetLab(data, file)
		w.VMs[i] = Series{ID: names[i], CPU: cpu}
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := sameLength(w, label); err != nil {
		return nil, err
	}
	return w, nil
}

// percent[v] is the CPU fraction for v percent, computed as other code in the tree does.
var percent = func() (p [101]float32) {
	for v := range p {
		p[v] = float32(v) / 100
	}
	return p
}()

func parsePlanetLab(data []byte, file string) ([]float32, error) {
	cpu := make([]float32, 0, 288)
	line, blank := 0, 0 // blank: first blank line since the last value
	for len(data) > 0 {
		var l []byte
		l, data = nextLine(data)
		line++
		l = trim(l)
		if len(l) == 0 {
			if blank == 0 {
				blank = line
			}
			continue
		}
		if blank != 0 {
			return nil, lineErr(file, blank, "blank line inside the trace")
		}
		v, err := parsePercent(l)
		if err != nil {
			return nil, &ParseError{File: file, Line: line, Err: err}
		}
		cpu = append(cpu, percent[v])
	}
	if len(cpu) == 0 {
		return nil, &ParseError{File: file, Err: fmt.Errorf("no samples")}
	}
	return cpu, nil
}

func parsePercent(b []byte) (int, error) {
	digits := b
	if digits[0] == '-' || digits[0] == '+' {
		digits = digits[1:]
	}
	if len(digits) == 0 {
		return 0, fmt.Errorf("%s is not an integer percent", quote(b))
	}
	v := 0
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%s is not an integer percent", quote(b))
		}
		if v <= 100 {
			v = v*10 + int(c-'0')
		}
	}
	if v > 100 || (b[0] == '-' && v != 0) {
		return 0, fmt.Errorf("%s is out of range 0..100", quote(b))
	}
	return v, nil
}

// sameLength checks that every VM has as many samples as most of them do, and names
// the first file that does not.
func sameLength(w *Workload, label string) error {
	count := map[int]int{}
	for _, s := range w.VMs {
		count[len(s.CPU)]++
	}
	if len(count) == 1 {
		return nil
	}
	want := 0
	for n, c := range count {
		if c > count[want] || (c == count[want] && n > want) {
			want = n
		}
	}
	for _, s := range w.VMs {
		if len(s.CPU) != want {
			return &ParseError{File: joinLabel(label, s.ID), Err: fmt.Errorf("%d samples, but %d of %d files have %d", len(s.CPU), count[want], len(w.VMs), want)}
		}
	}
	return nil
}
