package trace

import (
	"errors"
	"fmt"
	"io/fs"
)

// ParseError reports a problem in one trace file or folder.
type ParseError struct {
	File string // path as the caller named it
	Line int    // 1-based; 0 when the problem is not on one line
	Err  error
}

func (e *ParseError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s: line %d: %v", e.File, e.Line, e.Err)
	}
	return e.File + ": " + e.Err.Error()
}

func (e *ParseError) Unwrap() error { return e.Err }

func lineErr(file string, line int, format string, args ...any) error {
	return &ParseError{File: file, Line: line, Err: fmt.Errorf(format, args...)}
}

// fsErr drops the fs-relative path from a *fs.PathError: the label already names the
// file the way the caller spelled it.
func fsErr(label string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return &ParseError{File: label, Err: err}
}

// quote shows an offending field, cut short so that binary junk cannot flood a message.
func quote(b []byte) string {
	const max = 40
	if len(b) > max {
		return fmt.Sprintf("%q...", b[:max])
	}
	return fmt.Sprintf("%q", b)
}

// notFound reads better than fs.ErrNotExist's "file does not exist" but still matches it.
type notFound string

func (e notFound) Error() string      { return string(e) }
func (notFound) Is(target error) bool { return target == fs.ErrNotExist }
