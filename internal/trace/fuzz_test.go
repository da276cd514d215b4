package trace

import (
	"os"
	"testing"
)

// smallGrids keeps fuzzed timestamps from asking for grids that take seconds to fill.
func smallGrids(f *testing.F) {
	old := maxGridSamples
	maxGridSamples = 1 << 16
	f.Cleanup(func() { maxGridSamples = old })
}

func FuzzPlanetLab(f *testing.F) {
	f.Add([]byte("0\n100\n7\n"))
	f.Add([]byte(" 5\r\n6 \r\n\n"))
	f.Add([]byte("1\n\n2\n-0\n+3"))
	f.Add([]byte("101\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := ReadPlanetLab(files("vm", string(data)), "d")
		if err == nil {
			checkWorkload(t, w)
		}
	})
}

func FuzzBitbrains(f *testing.F) {
	real, err := os.ReadFile("testdata/bitbrains-poweroff/20.csv")
	if err != nil {
		f.Fatal(err)
	}
	smallGrids(f)
	f.Add(real)
	f.Add([]byte(bbHeader + bbRow(1e9, 1, 1, 2, 0, 0, 0, 0) + bbRow(1e9+900, 150, 3, 2, 1, 1, 1, 1)))
	f.Add([]byte(bbHeader + "1000000000;\t2;\t1.5E7;\t0;\t0;\t0;\t0;\t0;\t0;\t0;\t0;\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := ReadBitbrains(files("1.csv", string(data)), "d")
		if err == nil {
			checkWorkload(t, w)
		}
	})
}

func FuzzCSV(f *testing.F) {
	smallGrids(f)
	f.Add([]byte("vm,timestamp,cpu,mem,net,disk\na,0,0.5,0.5,1,2\na,60,1,0,0,0\nb,120,0,1,3,4\n"), int64(0))
	f.Add([]byte("Timestamp,VM,cpu,mem,net,disk,x\n1060,web,0.5,0.25,10,20,x\n1000,web,0.1,0.5,0,0,\n"), int64(7))
	f.Fuzz(func(t *testing.T, data []byte, step int64) {
		w, err := ReadCSV(files("t.csv", string(data)), "d/t.csv", step)
		if err == nil {
			checkWorkload(t, w)
		}
	})
}
