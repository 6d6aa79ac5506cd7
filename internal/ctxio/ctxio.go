// Package ctxio holds io helpers that stop when a context is done.
package ctxio

import (
	"context"
	"fmt"
	"io"
)

// bufSize is the most Copy reads at once, so the most it reads after ctx
// is done.
const bufSize = 256 << 10

// Copy is io.Copy that checks ctx before each read (of up to 256 KiB): once
// ctx is done it stops with an error matching ctx.Err() and, when ctx has
// one, its cause. A short write is io.ErrShortWrite.
func Copy(ctx context.Context, w io.Writer, r io.Reader) (int64, error) {
	buf := make([]byte, bufSize)
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			if cause := context.Cause(ctx); cause != err {
				err = fmt.Errorf("%w: %w", err, cause)
			}
			return total, err
		}
		n, err := r.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
			if m != n {
				return total, io.ErrShortWrite
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}
