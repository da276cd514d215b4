package trace

import (
	"errors"
	"hash/fnv"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeFiles creates name/content pairs under dir.
func writeFiles(dir string, kv ...string) error {
	for i := 0; i < len(kv); i += 2 {
		p := filepath.Join(dir, kv[i])
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(kv[i+1]), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// The embedded sample must equal /work/shared/traces/planetlab/20110303. These numbers
// were measured on that folder with a separate script: the sum of all percents, the
// count of zeros, and FNV-1a over each file name + "\n" + its percents as bytes.
func TestSample(t *testing.T) {
	w, err := Sample()
	if err != nil {
		t.Fatal(err)
	}
	checkWorkload(t, w)
	if w.Name != SampleName || w.Kind != "planetlab" || w.Step != 300 || w.Start != 0 || w.Repaired != 0 {
		t.Errorf("header %q %q %v %d %d", w.Name, w.Kind, w.Step, w.Start, w.Repaired)
	}
	if len(w.VMs) != 1052 || w.Len() != 288 {
		t.Fatalf("%d VMs x %d samples, want 1052 x 288", len(w.VMs), w.Len())
	}
	if w.VMs[0].ID != "146-179_surfsnel_dsl_internl_net_colostate_557" || w.VMs[1051].ID != "vn5_cse_wustl_edu_uw_oneswarm" {
		t.Errorf("first/last VM %q %q", w.VMs[0].ID, w.VMs[1051].ID)
	}
	h := fnv.New64a()
	sum, zeros := 0, 0
	for _, s := range w.VMs {
		h.Write([]byte(s.ID + "\n"))
		b := make([]byte, len(s.CPU))
		for i, x := range s.CPU {
			p := int(math.Round(float64(x) * 100))
			if x != float32(p)/100 {
				t.Fatalf("%s[%d] = %v is not a whole percent", s.ID, i, x)
			}
			b[i] = byte(p)
			sum += p
			if p == 0 {
				zeros++
			}
		}
		h.Write(b)
	}
	if sum != 3730979 || zeros != 45401 || h.Sum64() != 0xe3af07ef1b5f533c {
		t.Errorf("sum %d zeros %d hash %#x, want 3730979 45401 0xe3af07ef1b5f533c", sum, zeros, h.Sum64())
	}
}

func TestLoad(t *testing.T) {
	for _, spec := range []string{"", "sample", "planetlab"} {
		w, err := Load(spec)
		if err != nil || w.Name != SampleName || len(w.VMs) != 1052 {
			t.Errorf("Load(%q) = %v, %v", spec, w, err)
		}
	}
	w, err := Load("bitbrains:testdata/bitbrains/")
	if err != nil || w.Name != "bitbrains:bitbrains" || len(w.VMs) != 3 {
		t.Fatalf("bitbrains: %v, %v", w, err)
	}

	dir := t.TempDir()
	csv := filepath.Join(dir, "x.csv")
	if err := writeFiles(dir, "x.csv", "vm,timestamp,cpu,mem,net,disk\na,0,0,0,0,0\na,30,1,0,0,0\na,40,1,0,0,0\nb,100,0,0,0,0\n"); err != nil {
		t.Fatal(err)
	}
	w, err = Load("csv:" + csv)
	if err != nil || w.Step != 10 || w.Name != "csv:x.csv" {
		t.Fatalf("csv: %v, %v", w, err)
	}
	w, err = Load("csv:" + csv + "?step=50")
	if err != nil || w.Step != 50 || w.Len() != 3 {
		t.Fatalf("csv?step=50: %v, %v", w, err)
	}
	_, err = Load("csv:" + filepath.Join(dir, "nope.csv"))
	wantErr(t, err, filepath.Join(dir, "nope.csv"), "not found")

	for _, spec := range []string{"planetlab:", "bogus", "alibaba:/x", "/some/dir", "csv:" + csv + "?step=0", "csv:" + csv + "?size=3"} {
		_, err := Load(spec)
		if err == nil {
			t.Errorf("Load(%q) gave no error", spec)
		}
	}
	_, err = Load("alibaba:/x")
	for _, form := range []string{`"alibaba:/x"`, `"sample"`, `"planetlab:<dir>"`, `"bitbrains:<dir>"`, `"csv:<file>"`} {
		if !strings.Contains(err.Error(), form) {
			t.Errorf("%q does not list %s", err, form)
		}
	}
}

func BenchmarkLoadSample(b *testing.B) {
	for b.Loop() {
		if _, err := Sample(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadBitbrainsTestdata(b *testing.B) {
	fsys := os.DirFS("testdata")
	for b.Loop() {
		if _, err := ReadBitbrains(fsys, "bitbrains"); err != nil {
			b.Fatal(err)
		}
	}
}

func TestDirFS(t *testing.T) {
	dir := t.TempDir()
	big := strings.Repeat("12\n", 100000)
	if err := writeFiles(dir, "empty", "", "big", big, "sub/x", "1\n"); err != nil {
		t.Fatal(err)
	}
	fsys := dirFS(dir)
	for name, want := range map[string]string{"empty": "", "big": big, "sub/x": "1\n"} {
		got, err := fs.ReadFile(fsys, name)
		if err != nil || string(got) != want {
			t.Errorf("ReadFile(%q) = %d bytes, %v; want %d bytes", name, len(got), err, len(want))
		}
	}
	for _, name := range []string{"sub", "nope", "../x", "/etc/passwd"} {
		if _, err := fs.ReadFile(fsys, name); err == nil {
			t.Errorf("ReadFile(%q) gave no error", name)
		}
	}
	if _, err := fs.ReadFile(fsys, "nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v is not fs.ErrNotExist", err)
	}
}
