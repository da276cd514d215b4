package trace

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

const bbHeader = "Timestamp [ms];\tCPU cores;\tCPU capacity provisioned [MHZ];\tCPU usage [MHZ];\tCPU usage [%];\tMemory capacity provisioned [KB];\tMemory usage [KB];\tDisk read throughput [KB/s];\tDisk write throughput [KB/s];\tNetwork received throughput [KB/s];\tNetwork transmitted throughput [KB/s]\n"

// bbRow writes a Bitbrains row: t, cpu%, mem used/provisioned KB, disk r/w, net rx/tx.
func bbRow(t int64, pct, memUse, memProv, dr, dw, rx, tx float64) string {
	return fmt.Sprintf("%d;\t2;\t2000.0;\t%v;\t%v;\t%v;\t%v;\t%v;\t%v;\t%v;\t%v\n", t, pct*20, pct, memProv, memUse, dr, dw, rx, tx)
}

// Real rows: the first 600 of VMs 1, 10 and 20 of July 2013. They drift by a second
// every ~30 rows, and 10 and 20 have real 600 s gaps. Expected values come from an
// independent reimplementation of the rules run once on the same files.
func TestReadBitbrainsSample(t *testing.T) {
	w, err := ReadBitbrains(os.DirFS("testdata"), "bitbrains")
	if err != nil {
		t.Fatal(err)
	}
	checkWorkload(t, w)
	if w.Name != "bitbrains:bitbrains" || w.Kind != "bitbrains" || w.Step != 300 || w.Start != 1372629900 || w.Len() != 609 || w.Repaired != 27 {
		t.Fatalf("header = %q %q step %v start %d len %d repaired %d", w.Name, w.Kind, w.Step, w.Start, w.Len(), w.Repaired)
	}
	want := []struct {
		id          string
		cpuMHz, mem float64
		sums        [4]float64
	}{
		{"1", 5851.9989, 8192, [4]float64{16.546761, 23.032455, 12764.473810, 42041.261022}},
		{"10", 2599.999299, 2048, [4]float64{14.666333, 93.631105, 2130.433333, 12501.547619}},
		{"20", 2599.999724, 4096, [4]float64{6.890656, 23.461270, 62.161172, 6711.674176}},
	}
	for i, wv := range want {
		s := w.VMs[i]
		if s.ID != wv.id || s.CPUCapacity != wv.cpuMHz || s.MemCapacity != wv.mem {
			t.Errorf("VM %d = %q %v MHz %v MB, want %+v", i, s.ID, s.CPUCapacity, s.MemCapacity, wv)
		}
		for k, xs := range [][]float32{s.CPU, s.Mem, s.Net, s.Disk} {
			sum := 0.0
			for _, x := range xs {
				sum += float64(x)
			}
			if d := sum - wv.sums[k]; d > 1e-3*max(1, wv.sums[k]) || d < -1e-3*max(1, wv.sums[k]) {
				t.Errorf("VM %s series %d sums to %.6f, want %.6f", s.ID, k, sum, wv.sums[k])
			}
		}
	}
}

// Real rows of VM 20 as it powers off: the same timestamp appears two or three times
// with different values, and capacity drops to 0.
func TestReadBitbrainsPowerOff(t *testing.T) {
	w, err := ReadBitbrains(os.DirFS("testdata"), "bitbrains-poweroff")
	if err != nil {
		t.Fatal(err)
	}
	checkWorkload(t, w)
	if w.Start != 1373973300 || w.Len() != 17 || w.Repaired != 13 {
		t.Fatalf("start %d len %d repaired %d", w.Start, w.Len(), w.Repaired)
	}
	s := w.VMs[0]
	// Slot 7: two rows, memory 128623.73 and 671088 of 4194304 KB, net 0.33+1.27 and 0+7.
	// Slot 8: three rows, memory 671088 of 4194304, then two with nothing provisioned.
	wantSeries(t, "Mem[6:10]", s.Mem[6:10], 0.0306662877, 0.0953330676, 0.0533332825, 0)
	wantSeries(t, "Net[6:10]", s.Net[6:10], 1.6, 4.3, 7.0/3, 0)
	wantSeries(t, "CPU[5:8]", s.CPU[5:8], 0.008, 0.0133333333, 0)
}

func TestReadBitbrainsRepair(t *testing.T) {
	const t0 = 1_000_000_400 // 200 past a multiple of 300: the grid starts at t0+100
	w, err := ReadBitbrains(files(
		// Gap of three slots, a duplicate (averaged), a late second sample.
		"2.csv", bbHeader+
			bbRow(t0, 10, 100, 1000, 1, 2, 3, 4)+
			bbRow(t0+1201, 50, 500, 1000, 5, 6, 7, 8)+ // slot 4: slots 1..3 interpolated
			bbRow(t0+1499, 30, 0, 0, 0, 0, 0, 0)+ // slot 5, with the next row
			bbRow(t0+1550, 90, 300, 1000, 0, 10, 0, 20),
		// Starts late and ends early: first / last values repeated.
		"10.csv", bbHeader+
			bbRow(t0+600, 20, 1, 2, 0, 0, 0, 0)+
			bbRow(t0+900, 140, 2, 2, 0, 0, 0, 0), // above 100 %: clamped
	), "d")
	if err != nil {
		t.Fatal(err)
	}
	checkWorkload(t, w)
	if w.Start != t0+100 || w.Len() != 6 {
		t.Fatalf("start %d len %d", w.Start, w.Len())
	}
	// VM 2: 3 filled + 1 merged; VM 10: 2 leading + 2 trailing.
	if w.Repaired != 8 {
		t.Errorf("Repaired = %d, want 8", w.Repaired)
	}
	if w.VMs[0].ID != "2" || w.VMs[1].ID != "10" {
		t.Fatalf("order %q %q, want numeric", w.VMs[0].ID, w.VMs[1].ID)
	}
	a := w.VMs[0]
	wantSeries(t, "2 CPU", a.CPU, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
	wantSeries(t, "2 Mem", a.Mem, 0.1, 0.2, 0.3, 0.4, 0.5, 0.15)
	wantSeries(t, "2 Disk", a.Disk, 3, 5, 7, 9, 11, 5)
	wantSeries(t, "2 Net", a.Net, 7, 9, 11, 13, 15, 10)
	if a.CPUCapacity != 2000 || a.MemCapacity != 1000.0/1024 {
		t.Errorf("capacity %v %v", a.CPUCapacity, a.MemCapacity)
	}
	b := w.VMs[1]
	wantSeries(t, "10 CPU", b.CPU, 0.2, 0.2, 0.2, 1, 1, 1)
	wantSeries(t, "10 Mem", b.Mem, 0.5, 0.5, 0.5, 1, 1, 1)
}

func TestReadBitbrainsOrder(t *testing.T) {
	row := bbHeader + bbRow(1e9, 1, 1, 1, 0, 0, 0, 0)
	w, err := ReadBitbrains(files("10.csv", row, "9.csv", row, "readme.txt", "x"), "d")
	if err != nil {
		t.Fatal(err)
	}
	if w.VMs[0].ID != "9" || w.VMs[1].ID != "10" {
		t.Errorf("numeric IDs in order %q %q", w.VMs[0].ID, w.VMs[1].ID)
	}
	w, err = ReadBitbrains(files("10.csv", row, "9.csv", row, "a.csv", row), "d")
	if err != nil {
		t.Fatal(err)
	}
	if w.VMs[0].ID != "10" || w.VMs[1].ID != "9" || w.VMs[2].ID != "a" {
		t.Errorf("mixed IDs in order %q %q %q", w.VMs[0].ID, w.VMs[1].ID, w.VMs[2].ID)
	}
}

func TestReadBitbrainsErrors(t *testing.T) {
	good := bbRow(1e9, 1, 1, 2, 0, 0, 0, 0)
	for _, tc := range []struct {
		name, data string
		parts      []string
	}{
		{"no header", good + good, []string{"d/7.csv", "line 1", "no header"}},
		{"short header", "a;b\n" + good, []string{"d/7.csv", "line 1", "header has 2 columns"}},
		{"missing column", bbHeader + good + "1000000300;\t2;\t2000\n", []string{"d/7.csv", "line 3", "3 columns, want 11"}},
		{"extra column", bbHeader + strings.TrimSuffix(good, "\n") + ";\t1;\t2\n", []string{"d/7.csv", "line 2", "13 columns"}},
		{"not a number", bbHeader + strings.Replace(good, "\t0;", "\tzero;", 1), []string{"d/7.csv", "line 2", `disk read [KB/s]: "zero" is not a number`}},
		{"empty field", bbHeader + good + strings.Replace(good, "\t2000.0;", "\t;", 1), []string{"d/7.csv", "line 3", `CPU capacity [MHz]: "" is not a number`}},
		{"nan", bbHeader + strings.Replace(good, "\t2000.0;", "\tNaN;", 1), []string{"line 2", `"NaN" is not a number`}},
		{"inf", bbHeader + strings.Replace(good, "\t2000.0;", "\t1e999;", 1), []string{"line 2", `"1e999" is not a number`}},
		{"negative", bbHeader + strings.Replace(good, "\t2000.0;", "\t-3;", 1), []string{"line 2", `"-3" is negative`}},
		{"bad timestamp", bbHeader + good + "13726.5" + good[10:], []string{"d/7.csv", "line 3", `timestamp: "13726.5" is not an integer timestamp`}},
		{"header only", bbHeader + "\n", []string{"d/7.csv", "no samples"}},
		{"far timestamps", bbHeader + good + strings.Replace(good, "1000000000", "1000000000000", 1), []string{"d", "too large a grid"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadBitbrains(files("1.csv", bbHeader+good, "7.csv", tc.data), "d")
			wantErr(t, err, tc.parts...)
		})
	}
	_, err := ReadBitbrains(files("a.txt", "x"), "d")
	wantErr(t, err, "d:", "no trace .csv files")
}
