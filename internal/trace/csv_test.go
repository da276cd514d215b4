package trace

import (
	"testing"
)

func TestReadCSV(t *testing.T) {
	// Rows out of order and VMs interleaved; extra column ignored; columns reordered.
	const data = "Timestamp,VM,cpu,mem,net,disk,note\n" +
		"1060,web,0.5,0.25,10,20,x\n" +
		"1000,web,0.1,0.5,0,0,\n" +
		"\n" +
		"1000,db,1,0,1,1,\n" +
		"1120,db,0.4,1,4,4,\n" + // db misses 1060: interpolated
		"1120,web,0.3,0.25,30,40,\n" +
		"1120,web,0.5,0.75,50,60,\n" // duplicate: averaged
	w, err := ReadCSV(files("t.csv", data), "d/t.csv", 0)
	if err != nil {
		t.Fatal(err)
	}
	checkWorkload(t, w)
	if w.Name != "csv:t.csv" || w.Kind != "csv" || w.Step != 60 || w.Start != 1020 || w.Len() != 3 {
		t.Fatalf("header %q %q step %v start %d len %d", w.Name, w.Kind, w.Step, w.Start, w.Len())
	}
	// Step 60 (the commonest gap); 1000 rounds to the grid time 1020, so slots are
	// centred on 1020, 1080, 1140 and 1000, 1060, 1120 fall in slots 0, 1, 2.
	if w.VMs[0].ID != "db" || w.VMs[1].ID != "web" {
		t.Fatalf("order %q %q", w.VMs[0].ID, w.VMs[1].ID)
	}
	db, web := w.VMs[0], w.VMs[1]
	wantSeries(t, "db CPU", db.CPU, 1, 0.7, 0.4)
	wantSeries(t, "db Mem", db.Mem, 0, 0.5, 1)
	wantSeries(t, "db Net", db.Net, 1, 2.5, 4)
	wantSeries(t, "web CPU", web.CPU, 0.1, 0.5, 0.4)
	wantSeries(t, "web Mem", web.Mem, 0.5, 0.25, 0.5)
	wantSeries(t, "web Disk", web.Disk, 0, 20, 50)
	if w.Repaired != 2 {
		t.Errorf("Repaired = %d, want 2 (one gap, one duplicate)", w.Repaired)
	}
}

func TestReadCSVExplicitStep(t *testing.T) {
	const data = "vm,timestamp,cpu,mem,net,disk\n" +
		"1,0,0,0,0,0\n" +
		"1,10,0.1,0,0,0\n" +
		"1,20,0.2,0,0,0\n" +
		"1,40,0.4,0,0,0\n"
	w, err := ReadCSV(files("t.csv", data), "d/t.csv", 20)
	if err != nil {
		t.Fatal(err)
	}
	// 10 falls in slot 1 (rounding half up) with 20; 40 in slot 2.
	wantSeries(t, "CPU", w.VMs[0].CPU, 0, 0.15, 0.4)
	if w.Step != 20 || w.Repaired != 1 {
		t.Errorf("step %v repaired %d", w.Step, w.Repaired)
	}

	w, err = ReadCSV(files("t.csv", data), "d/t.csv", 0)
	if err != nil {
		t.Fatal(err)
	}
	wantSeries(t, "inferred CPU", w.VMs[0].CPU, 0, 0.1, 0.2, 0.3, 0.4)
}

func TestReadCSVErrors(t *testing.T) {
	const h = "vm,timestamp,cpu,mem,net,disk\n"
	for _, tc := range []struct {
		name, data string
		step       int64
		parts      []string
	}{
		{"missing column", "vm,timestamp,cpu,net,disk\n1,0,0,0,0\n", 0, []string{"d/t.csv", "line 1", `missing column "mem"`}},
		{"twice", "vm,timestamp,cpu,mem,net,disk,cpu\n", 0, []string{"d/t.csv", "line 1", `"cpu" appears twice`}},
		{"short row", h + "1,0,0,0,0,0\n1,300,0,0\n", 0, []string{"d/t.csv", "line 3", "4 columns, want 6"}},
		{"not a number", h + "1,0,0,0,0,0\n1,300,0,abc,0,0\n", 0, []string{"d/t.csv", "line 3", `mem: "abc" is not a number`}},
		{"percent", h + "1,0,57,0,0,0\n", 0, []string{"d/t.csv", "line 2", `cpu: "57" is out of range 0..1`}},
		{"negative", h + "\n\n1,0,0,0,-2,0\n", 0, []string{"d/t.csv", "line 4", `net: "-2" is negative`}},
		{"bad time", h + "1,yesterday,0,0,0,0\n", 0, []string{"d/t.csv", "line 2", `timestamp: "yesterday"`}},
		{"no vm", h + ",0,0,0,0,0\n", 0, []string{"d/t.csv", "line 2", "vm: empty"}},
		{"empty", "\n", 0, []string{"d/t.csv", "no header"}},
		{"no rows", h, 0, []string{"d/t.csv", "no samples"}},
		{"one time", h + "1,5,0,0,0,0\n2,5,0,0,0,0\n", 0, []string{"d/t.csv", "cannot infer the step"}},
		{"bad step", h + "1,5,0,0,0,0\n", -1, []string{"d/t.csv", "step -1"}},
		{"huge grid", h + "1,0,0,0,0,0\n1,1,0,0,0,0\n1,1000000000,0,0,0,0\n", 0, []string{"d/t.csv", "too large a grid"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadCSV(files("t.csv", tc.data), "d/t.csv", tc.step)
			wantErr(t, err, tc.parts...)
		})
	}
	_, err := ReadCSV(files(), "d/t.csv", 0)
	wantErr(t, err, "d/t.csv", "not found")
}
