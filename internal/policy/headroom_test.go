package policy

import (
	"math"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/headroom/headroom/internal/model"
)

func TestExampleConfigIsTheDefault(t *testing.T) {
	b, err := os.ReadFile("../../examples/headroom.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseHeadroom(b, "headroom.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, DefaultHeadroom()) {
		t.Errorf("examples/headroom.yaml differs from the defaults:\n%+v\n%+v", c, DefaultHeadroom())
	}
}

func TestNormalHelpers(t *testing.T) {
	if z := Z(0.9); math.Abs(z-1.2815515655446004) > 1e-12 {
		t.Errorf("Z(0.9) = %v", z)
	}
	if p := ProbAbove(100, 10, 100+10*Z(0.9)); math.Abs(p-0.1) > 1e-12 {
		t.Errorf("P above the 90 %% quantile = %v, want 0.1", p)
	}
	if ProbAbove(5, 0, 4) != 1 || ProbAbove(5, 0, 6) != 0 {
		t.Error("zero spread must give a certain answer")
	}
}

func FuzzParseHeadroom(f *testing.F) {
	if b, err := os.ReadFile("../../examples/headroom.yaml"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("overload: {threshold: 0.8, probability: 0.9}\n"))
	f.Add([]byte("resources: [cpu, mem]\noverload_by_resource: {mem: {threshold: 0.8, probability: 0.1}}\n"))
	f.Add([]byte("groups: {db: {overload_by_resource: {net: {threshold: 0.7, probability: 0.3}}}}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseHeadroom(b, "f")
		if err != nil {
			return
		}
		if c.Validate() != nil || c.Confidence <= 0 || c.Confidence >= 1 || math.IsNaN(c.Overload.Threshold) {
			t.Fatalf("accepted an invalid config %+v", c)
		}
		if len(c.ResourceList()) != len(c.Resources) || len(c.Resources) == 0 {
			t.Fatalf("resources %v read as %v", c.Resources, c.ResourceList())
		}
		for _, r := range c.ResourceList() {
			if tr := c.Trigger(r); !(tr.Probability > 0 && tr.Probability < 1 && tr.Threshold > 0) {
				t.Fatalf("%s trigger %+v out of range", r, tr)
			}
		}
	})
}

func TestResourceTriggers(t *testing.T) {
	c := DefaultHeadroom()
	if got := c.ResourceList(); len(got) != 4 {
		t.Errorf("default resources %v, want all four", got)
	}
	mem, cpu := c.Trigger(model.Mem), c.Trigger(model.CPU)
	// Memory is incompressible: its trigger is lower (earlier) and needs less
	// certainty (surer) than CPU's; network and disk share CPU's.
	if !(mem.Threshold < cpu.Threshold && mem.Probability < cpu.Probability) {
		t.Errorf("memory trigger %+v is not earlier and surer than CPU's %+v", mem, cpu)
	}
	if c.Trigger(model.Net) != cpu || c.Trigger(model.Disk) != cpu {
		t.Error("network and disk must fall back to the overload trigger")
	}
	g, err := ParseHeadroom([]byte("resources: [cpu]\ngroups: {db: {overload: {threshold: 0.8, probability: 0.6}, overload_by_resource: {mem: {threshold: 0.95, probability: 0.05}}}}\n"), "g.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(g.ResourceList()) != 1 || g.Trigger(model.Mem) != mem {
		t.Errorf("a file naming only resources and groups changed the memory default: %+v", g.Trigger(model.Mem))
	}
	db := g.Groups["db"]
	if tr, ok := db.GroupTrigger(model.Mem); !ok || tr.Probability != 0.05 {
		t.Errorf("group memory trigger %+v", tr)
	}
	if tr, _ := db.GroupTrigger(model.CPU); tr.Stricter(cpu) != (OverloadTrigger{Threshold: 0.8, Probability: 0.5}) {
		t.Errorf("stricter of %+v and %+v = %+v", tr, cpu, tr.Stricter(cpu))
	}
}

func TestResourceConfigErrorsNameTheField(t *testing.T) {
	for in, want := range map[string]string{
		"resources: []\n":         "resources:",
		"resources: [cpu, gpu]\n": `resources[1]: unknown resource "gpu"`,
		"resources: [cpu, cpu]\n": `resources[1]: "cpu" given twice`,
		"overload_by_resource: {ram: {threshold: 1, probability: 0.5}}":                `overload_by_resource: unknown resource "ram"`,
		"overload_by_resource: {mem: {threshold: 0.9}}\n":                              "overload_by_resource.mem",
		"groups: {g: {overload_by_resource: {net: {threshold: 3, probability: 0.5}}}}": "groups.g.overload_by_resource.net",
	} {
		if _, err := ParseHeadroom([]byte(in), "c.yaml"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error naming %q", in, err, want)
		}
	}
}

// underload.scorers is read from YAML; without it consolidation has none of its own.
func TestUnderloadScorersParse(t *testing.T) {
	if c := DefaultHeadroom(); c.Underload.Scorers != nil {
		t.Errorf("default underload.scorers %v, want none (placement's)", c.Underload.Scorers)
	}
	c, err := ParseHeadroom([]byte("underload:\n  scorers:\n    - {name: packing, weight: 1}\n    - {name: affinity, weight: 1}\n"), "x.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := []WeightedStep{{"packing", 1}, {"affinity", 1}}
	if !reflect.DeepEqual(c.Underload.Scorers, want) {
		t.Errorf("underload.scorers %v, want %v", c.Underload.Scorers, want)
	}
}
