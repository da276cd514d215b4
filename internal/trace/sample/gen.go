//go:build ignore

// gen writes the embedded PlanetLab sample: the day folder as an uncompressed zip
// (so archive/zip serves it as an fs.FS) inside gzip (so files compress together).
//
//	go run ./internal/trace/sample/gen.go /path/to/planetlab/20110303 \
//		internal/trace/sample/planetlab-20110303.zip.gz
package main

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"log"
	"os"
	"path/filepath"
	"slices"
)

func main() {
	if len(os.Args) != 3 {
		log.Fatal("usage: go run gen.go <planetlab day folder> <output .zip.gz>")
	}
	dir, out := filepath.Clean(os.Args[1]), os.Args[2]
	day := filepath.Base(dir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		log.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)

	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			log.Fatal(err)
		}
		f, err := zw.CreateHeader(&zip.FileHeader{Name: day + "/" + n, Method: zip.Store})
		if err != nil {
			log.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			log.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		log.Fatal(err)
	}

	var gbuf bytes.Buffer
	gw, _ := gzip.NewWriterLevel(&gbuf, gzip.BestCompression)
	gw.Write(zbuf.Bytes())
	if err := gw.Close(); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(out, gbuf.Bytes(), 0o644); err != nil {
		log.Fatal(err)
	}
	log.Printf("%s: %d files, %d bytes zip, %d bytes gzip", out, len(names), zbuf.Len(), gbuf.Len())
}
