package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(args ...string) (string, error) {
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestSimulateErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "day")
	os.Mkdir(bad, 0o755)
	os.WriteFile(filepath.Join(bad, "vm1"), []byte("10\nabc\n"), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"simulate", "--policy", "nope"}, `unknown policy "nope"`},
		{[]string{"simulate", "--workload", "planetlab:" + filepath.Join(dir, "missing")}, "missing"},
		{[]string{"simulate", "--workload", "planetlab:" + bad}, "line 2"},
		{[]string{"simulate", "--workload", "bogus:x"}, "--workload"},
		{[]string{"simulate", "--random-rules", "anti=2"}, "--random-rules"},
		{[]string{"simulate", "--rules", filepath.Join(dir, "none.yaml")}, "--rules"},
		{[]string{"plan"}, "--snapshot: required"},
		{[]string{"plan", "--snapshot", filepath.Join(dir, "none.json")}, "--snapshot"},
	} {
		_, err := run(c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want it to contain %q", c.args, err, c.want)
		}
	}
}

func TestSimulateJSONOnTheEmbeddedDay(t *testing.T) {
	out, err := run("simulate", "--policy", "dvfs", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, out)
	}
	for _, k := range []string{"policy", "workload", "hosts", "vms", "energy_kwh", "host_energy_kwh", "migration_energy_kwh", "migrations", "slatah", "pdm", "slav", "esv", "wall_seconds"} {
		if _, ok := r[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	if r["vms"].(float64) != 1052 || r["workload"] != "planetlab:20110303" {
		t.Errorf("vms %v, workload %v: want the embedded day", r["vms"], r["workload"])
	}
}

// With neither --policy nor --compare, the main job shows headroom beside
// LR-MMT, and headroom must come out ahead on SLA and migrations.
func TestSimulateDefaultComparesHeadroomWithLR(t *testing.T) {
	if testing.Short() {
		t.Skip("two full-day runs")
	}
	out, err := run("simulate", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Runs []struct {
			Policy     string  `json:"policy"`
			ESV        float64 `json:"esv"`
			Migrations int     `json:"migrations"`
		} `json:"runs"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || len(r.Runs) != 2 {
		t.Fatalf("want {\"runs\": [two]}: %v\n%s", err, out)
	}
	h, lr := r.Runs[0], r.Runs[1]
	if h.Policy != "headroom" || lr.Policy != "lr-mmt-1.2" {
		t.Fatalf("runs %q, %q; want headroom, lr-mmt-1.2", h.Policy, lr.Policy)
	}
	if !(h.ESV < lr.ESV && h.Migrations < lr.Migrations) {
		t.Errorf("headroom ESV %g, %d migrations; lr-mmt-1.2 %g, %d", h.ESV, h.Migrations, lr.ESV, lr.Migrations)
	}
	if _, err := run("simulate", "--policy", "dvfs", "--compare", "npa"); err == nil || !strings.Contains(err.Error(), "--compare") {
		t.Errorf("--policy with --compare: %v", err)
	}
}

func TestPlanExplainShowsEveryCandidate(t *testing.T) {
	out, err := run("plan", "--snapshot", "../../examples/snapshot.json", "--explain")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Hosts at risk:", "kvm-a: P(CPU > 100%)", "migrate batch-2 from kvm-a", "Candidates for batch-2:", "rejected by excluded", "feasible", "packing="} {
		if !strings.Contains(out, want) {
			t.Errorf("plan --explain output lacks %q:\n%s", want, out)
		}
	}
}

func TestReportIsWritten(t *testing.T) {
	if testing.Short() {
		t.Skip("two full-day runs")
	}
	dir := t.TempDir()
	if _, err := run("simulate", "--compare", "dvfs,thr-mmt-0.8", "--report", dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Active hosts", "Migrations per interval", "thr-mmt-0.8", "dvfs", "<svg"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

// TestScorecardOnSplitDays runs the scorecard on day folders CloudSim never saw
// (so its policies are simulated), on a cluster sized by --hosts.
func TestScorecardOnSplitDays(t *testing.T) {
	root := t.TempDir()
	day := filepath.Join(root, "tiny-even")
	os.Mkdir(day, 0o755)
	for v := range 6 {
		var b strings.Builder
		for i := range 288 {
			b.WriteString([]string{"10\n", "90\n", "40\n"}[(i/24+v)%3])
		}
		os.WriteFile(filepath.Join(day, "vm"+string(rune('a'+v))), []byte(b.String()), 0o644)
	}
	if _, err := run("scorecard", root, "--hosts", "-1"); err == nil || !strings.Contains(err.Error(), "--hosts") {
		t.Errorf("negative --hosts: %v", err)
	}
	out, err := run("scorecard", root, "--hosts", "4")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "| tiny-even | ") {
		t.Errorf("no row for the split day:\n%s", out)
	}
}
