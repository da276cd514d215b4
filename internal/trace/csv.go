package trace

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
)

// csvCols are the columns a generic CSV trace must have, in Series order after the first two.
var csvCols = [...]string{"vm", "timestamp", "cpu", "mem", "net", "disk"}

// ReadCSV reads a generic trace: a header row naming the columns vm, timestamp, cpu,
// mem, net, disk (any order, case-insensitive; other columns are ignored), then one
// plain comma-separated row (no quoting) per VM and time. cpu and mem are fractions
// 0..1, net and disk KB/s, timestamp whole Unix seconds. step is the grid step in
// seconds; 0 infers it as the most common positive gap between consecutive samples
// of a VM. VMs are ordered by ID (numerically when every ID is a number) and put on
// one grid as ReadBitbrains does.
func ReadCSV(fsys fs.FS, name string, step int64) (*Workload, error) {
	return readCSV(fsys, name, name, step)
}

func readCSV(fsys fs.FS, name, label string, step int64) (*Workload, error) {
	if step < 0 || step > maxTimestamp {
		return nil, &ParseError{File: label, Err: fmt.Errorf("step %d s is out of range", step)}
	}
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &ParseError{File: label, Err: notFound("file not found")}
		}
		return nil, fsErr(label, err)
	}
	vms, err := parseCSV(data, label)
	if err != nil {
		return nil, err
	}
	if step == 0 {
		if step = inferStep(vms); step == 0 {
			return nil, &ParseError{File: label, Err: errors.New("cannot infer the step: no VM has two samples at different times; give the step explicitly")}
		}
	}
	w := &Workload{Name: "csv:" + baseName(label), Kind: "csv"}
	if err := onGrid(w, vms, step, label); err != nil {
		return nil, err
	}
	return w, nil
}

func parseCSV(data []byte, file string) ([]timedVM, error) {
	var (
		col    [len(csvCols)]int // field index of each csvCols entry
		ncol   int               // fields per row; 0 until the header is read
		fields [][]byte
		vms    []timedVM
		index  = map[string]int{}
		line   int
	)
	for len(data) > 0 {
		var l []byte
		l, data = nextLine(data)
		line++
		l = trim(l)
		if len(l) == 0 {
			continue
		}
		fields = splitFields(fields, l, ',')
		if ncol == 0 {
			if err := csvHeader(fields, &col); err != nil {
				return nil, &ParseError{File: file, Line: line, Err: err}
			}
			ncol = len(fields)
			continue
		}
		if len(fields) != ncol {
			return nil, lineErr(file, line, "%d columns, want %d as in the header", len(fields), ncol)
		}
		id := fields[col[0]]
		if len(id) == 0 {
			return nil, lineErr(file, line, "vm: empty")
		}
		t, err := parseTimestamp(fields[col[1]])
		if err != nil {
			return nil, lineErr(file, line, "timestamp: %w", err)
		}
		var s = sample{t: t}
		for k := range s.v {
			f := fields[col[2+k]]
			if s.v[k], err = parseValue(f); err != nil {
				return nil, lineErr(file, line, "%s: %w", csvCols[2+k], err)
			}
			if k < 2 && s.v[k] > 1 {
				return nil, lineErr(file, line, "%s: %s is out of range 0..1", csvCols[2+k], quote(f))
			}
		}
		i, ok := index[string(id)]
		if !ok {
			i = len(vms)
			index[string(id)] = i
			vms = append(vms, timedVM{id: string(id)})
		}
		vms[i].samples = append(vms[i].samples, s)
	}
	if ncol == 0 {
		return nil, &ParseError{File: file, Err: errors.New("empty file: no header row")}
	}
	if len(vms) == 0 {
		return nil, &ParseError{File: file, Err: errors.New("no samples")}
	}
	return vms, nil
}

func csvHeader(fields [][]byte, col *[len(csvCols)]int) error {
	for k := range col {
		col[k] = -1
	}
	for i, f := range fields {
		for k, name := range csvCols {
			if !bytes.EqualFold(f, []byte(name)) {
				continue
			}
			if col[k] >= 0 {
				return fmt.Errorf("column %q appears twice", name)
			}
			col[k] = i
		}
	}
	var missing []string
	for k, c := range col {
		if c < 0 {
			missing = append(missing, fmt.Sprintf("%q", csvCols[k]))
		}
	}
	if len(missing) == 1 {
		return fmt.Errorf("missing column %s (want a header vm,timestamp,cpu,mem,net,disk)", missing[0])
	}
	if len(missing) > 1 {
		return fmt.Errorf("missing columns %s (want a header vm,timestamp,cpu,mem,net,disk)", strings.Join(missing, ", "))
	}
	return nil
}

// inferStep is the most common positive gap between consecutive samples of a VM (the
// smallest on a tie), or 0 if there is none. It sorts the samples.
func inferStep(vms []timedVM) int64 {
	count := map[int64]int{}
	for _, vm := range vms {
		slices.SortStableFunc(vm.samples, cmpSample)
		for i := 1; i < len(vm.samples); i++ {
			if d := vm.samples[i].t - vm.samples[i-1].t; d > 0 {
				count[d]++
			}
		}
	}
	var best int64
	for d, c := range count {
		if best == 0 || c > count[best] || (c == count[best] && d < best) {
			best = d
		}
	}
	return best
}
