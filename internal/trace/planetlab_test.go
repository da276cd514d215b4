package trace

import (
	"errors"
	"io/fs"
	"testing"
	"testing/fstest"
)

func TestReadPlanetLab(t *testing.T) {
	w, err := ReadPlanetLab(files(
		"b", "0\n100\n7\n",
		"a c", " 5\r\n6 \r\n7\r\n\n\n", // spaces in names occur in the real data; CRLF and blank tail are fine
		".hidden", "junk",
		"sub/x", "junk",
	), "d")
	if err != nil {
		t.Fatal(err)
	}
	checkWorkload(t, w)
	if w.Name != "planetlab:d" || w.Kind != "planetlab" || w.Step != 300 || w.Start != 0 || w.Repaired != 0 {
		t.Errorf("header = %q %q %v %d %d", w.Name, w.Kind, w.Step, w.Start, w.Repaired)
	}
	if len(w.VMs) != 2 || w.VMs[0].ID != "a c" || w.VMs[1].ID != "b" {
		t.Fatalf("VMs = %+v", w.VMs)
	}
	wantSeries(t, "a c", w.VMs[0].CPU, 0.05, 0.06, 0.07)
	wantSeries(t, "b", w.VMs[1].CPU, 0, 1, 0.07)
	if s := w.VMs[0]; s.Mem != nil || s.Net != nil || s.Disk != nil {
		t.Errorf("PlanetLab has only CPU: %+v", s)
	}
}

func TestReadPlanetLabErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fsys  fs.FS
		parts []string
	}{
		{"not an integer", files("a", "1\n2\n", "foo", "1\nabc\n"), []string{"d/foo", "line 2", `"abc" is not an integer percent`}},
		{"fraction", files("foo", "1\n2.5\n"), []string{"d/foo", "line 2", `"2.5"`}},
		{"above 100", files("foo", "101\n"), []string{"d/foo", "line 1", `"101" is out of range 0..100`}},
		{"huge", files("foo", "5\n99999999999999999999999\n"), []string{"d/foo", "line 2", "out of range"}},
		{"negative", files("foo", "3\n4\n-1\n"), []string{"d/foo", "line 3", `"-1" is out of range`}},
		{"sign only", files("foo", "-\n"), []string{"d/foo", "line 1", `"-"`}},
		{"blank inside", files("foo", "1\n\n2\n"), []string{"d/foo", "line 2", "blank line"}},
		{"empty file", files("a", "1\n", "foo", "\n\n"), []string{"d/foo", "no samples"}},
		{"short file", files("a", "1\n2\n3\n", "b", "1\n2\n3\n", "foo", "1\n2\n"), []string{"d/foo", "2 samples", "have 3"}},
		{"empty folder", fstest.MapFS{"d/.keep": {}}, []string{"d:", "no trace files"}},
		{"no folder", fstest.MapFS{}, []string{"d:", "not found"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := ReadPlanetLab(tc.fsys, "d")
			if w != nil {
				t.Errorf("got a workload with an error")
			}
			wantErr(t, err, tc.parts...)
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Errorf("%T is not a *ParseError", err)
			}
		})
	}
}

// The first failing file in name order is reported, whatever the goroutines do.
func TestReadPlanetLabFirstError(t *testing.T) {
	m := fstest.MapFS{}
	for _, n := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		m["d/"+n] = &fstest.MapFile{Data: []byte("1\nx" + n + "\n")}
	}
	for range 20 {
		_, err := ReadPlanetLab(m, "d")
		wantErr(t, err, "d/a: line 2")
	}
}

func TestLoadPlanetLabNamesOSPath(t *testing.T) {
	dir := t.TempDir()
	if err := writeFiles(dir, "20990101/vm1", "1\n2\n", "20990101/vm2", "1\nzz\n"); err != nil {
		t.Fatal(err)
	}
	_, err := Load("planetlab:" + dir + "/20990101")
	wantErr(t, err, dir+"/20990101/vm2: line 2: \"zz\"")

	_, err = Load("planetlab:" + dir + "/nope")
	wantErr(t, err, dir+"/nope", "not found")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%v is not fs.ErrNotExist", err)
	}
}
