//go:build !unix

package trace

import (
	"io/fs"
	"os"
)

func dirFS(dir string) fs.FS { return os.DirFS(dir) }
