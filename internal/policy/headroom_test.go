package policy

import (
	"math"
	"os"
	"reflect"
	"testing"
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
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseHeadroom(b, "f")
		if err != nil {
			return
		}
		if c.Validate() != nil || c.Confidence <= 0 || c.Confidence >= 1 || math.IsNaN(c.Overload.Threshold) {
			t.Fatalf("accepted an invalid config %+v", c)
		}
	})
}
