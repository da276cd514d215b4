package trace

import (
	"fmt"
	"io/fs"
	"strings"
)

// BitbrainsStep is the sampling interval of the Bitbrains traces, in seconds.
const BitbrainsStep = 300

// bitbrainsCols names the columns in errors; the files' own header is not trusted.
var bitbrainsCols = [...]string{
	"timestamp", "CPU cores", "CPU capacity [MHz]", "CPU usage [MHz]", "CPU usage [%]",
	"memory provisioned [KB]", "memory usage [KB]", "disk read [KB/s]", "disk write [KB/s]",
	"network received [KB/s]", "network transmitted [KB/s]",
}

const (
	bbTime = iota
	bbCores
	bbCapMHz
	bbUseMHz
	bbUsePct
	bbMemKB
	bbMemUseKB
	bbDiskRead
	bbDiskWrite
	bbNetRx
	bbNetTx
	bbCols
)

// ReadBitbrains reads a Bitbrains GWA-T-12 folder: every <n>.csv in dir is one VM
// (other files are ignored), ordered by number. All VMs share one 300 s grid whose
// Start is the earliest timestamp in any file rounded to a multiple of 300, and which
// runs to the latest. Each row goes to its nearest slot; rows sharing a slot are
// averaged (the real duplicates are mostly identical, and a mean does not depend on
// row order); empty slots between two samples are interpolated linearly, and those
// before a VM's first or after its last sample repeat that sample. Workload.Repaired
// counts merged rows plus filled slots.
//
// CPU is usage% / 100 clamped to 1 (some rows exceed 100 %). usage% equals
// usageMHz / capacityMHz wherever capacity is not 0, and is 0 rather than undefined
// when the VM is off. Mem is usage / provisioned KB clamped to 1, 0 when nothing is
// provisioned. CPUCapacity (MHz) and MemCapacity (MB) are the largest a file reports.
func ReadBitbrains(fsys fs.FS, dir string) (*Workload, error) {
	return readBitbrains(fsys, dir, dir)
}

type timedVM struct {
	id      string
	samples []sample
	cpuMHz  float64
	memMB   float64
}

func readBitbrains(fsys fs.FS, dir, label string) (*Workload, error) {
	names, err := listDir(fsys, dir, label, ".csv")
	if err != nil {
		return nil, err
	}
	vms := make([]timedVM, len(names))
	err = forEach(len(names), func(i int) error {
		file := joinLabel(label, names[i])
		data, err := fs.ReadFile(fsys, joinLabel(dir, names[i]))
		if err != nil {
			return fsErr(file, err)
		}
		vms[i], err = parseBitbrains(data, file)
		vms[i].id = strings.TrimSuffix(names[i], ".csv")
		return err
	})
	if err != nil {
		return nil, err
	}
	w := &Workload{Name: "bitbrains:" + baseName(label), Kind: "bitbrains"}
	if err := onGrid(w, vms, BitbrainsStep, label); err != nil {
		return nil, err
	}
	return w, nil
}

func parseBitbrains(data []byte, file string) (timedVM, error) {
	var vm timedVM
	fields := make([][]byte, 0, bbCols+1)
	line, header := 0, false
	for len(data) > 0 {
		var l []byte
		l, data = nextLine(data)
		line++
		l = trim(l)
		if len(l) == 0 {
			continue
		}
		fields = splitFields(fields, l, ';')
		// Tolerate a trailing separator.
		if len(fields) == bbCols+1 && len(fields[bbCols]) == 0 {
			fields = fields[:bbCols]
		}
		if !header {
			// The first line must be the header.
			if _, err := parseValue(fields[0]); err == nil {
				return vm, lineErr(file, line, "no header row: %s looks like data", quote(fields[0]))
			}
			if len(fields) != bbCols {
				return vm, lineErr(file, line, "header has %d columns, want %d", len(fields), bbCols)
			}
			header = true
			vm.samples = make([]sample, 0, len(data)/180+1) // rows are ~180 bytes
			continue
		}
		if len(fields) != bbCols {
			return vm, lineErr(file, line, "%d columns, want %d", len(fields), bbCols)
		}
		t, err := parseTimestamp(fields[bbTime])
		if err != nil {
			return vm, &ParseError{File: file, Line: line, Err: fmt.Errorf("%s: %w", bitbrainsCols[bbTime], err)}
		}
		var v [bbCols]float64
		for c := bbCores; c < bbCols; c++ {
			if v[c], err = parseValue(fields[c]); err != nil {
				return vm, &ParseError{File: file, Line: line, Err: fmt.Errorf("%s: %w", bitbrainsCols[c], err)}
			}
		}
		mem := 0.0
		if v[bbMemKB] > 0 {
			mem = clamp01(v[bbMemUseKB] / v[bbMemKB])
		}
		vm.samples = append(vm.samples, sample{t: t, v: [4]float64{
			clamp01(v[bbUsePct] / 100),
			mem,
			v[bbNetRx] + v[bbNetTx],
			v[bbDiskRead] + v[bbDiskWrite],
		}})
		vm.cpuMHz = max(vm.cpuMHz, v[bbCapMHz])
		vm.memMB = max(vm.memMB, v[bbMemKB]/1024)
	}
	if len(vm.samples) == 0 {
		return vm, &ParseError{File: file, Err: fmt.Errorf("no samples")}
	}
	return vm, nil
}

// onGrid sorts the VMs, puts them all on one grid from the earliest to the latest
// sample and fills w.
func onGrid(w *Workload, vms []timedVM, step int64, label string) error {
	tmin, tmax := int64(maxTimestamp), int64(0)
	for _, vm := range vms {
		for _, s := range vm.samples {
			tmin, tmax = min(tmin, s.t), max(tmax, s.t)
		}
	}
	g, err := newGrid(tmin, tmax, step, len(vms), label)
	if err != nil {
		return err
	}
	ids := make([]string, len(vms))
	for i, vm := range vms {
		ids[i] = vm.id
	}
	order := sortIDs(ids)
	w.Step, w.Start = float64(step), g.start
	w.VMs = make([]Series, len(vms))
	repaired := make([]int, len(vms))
	forEach(len(vms), func(i int) error {
		vm := &vms[order[i]]
		out, n := g.regularise(vm.samples)
		w.VMs[i] = Series{ID: vm.id, CPU: out[0], Mem: out[1], Net: out[2], Disk: out[3],
			CPUCapacity: vm.cpuMHz, MemCapacity: vm.memMB}
		repaired[i] = n
		return nil
	})
	for _, n := range repaired {
		w.Repaired += n
	}
	return nil
}
