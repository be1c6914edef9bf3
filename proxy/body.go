package proxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
)

// The request body is read once into a []byte of its own, so that it can be sent again
// on a retry, and is handed to the Transport as io.NopCloser(*bytes.Reader). That is
// one of the few body types net/http recognises as in-memory: it then writes the
// request headers and a small body with one write (one TCP segment) instead of
// flushing the headers first — for a GraphQL POST, one syscall and one loopback packet
// fewer per request. The buffer is immutable once read and never reused, so readers
// that net/http keeps after the handler returned (it may still be writing the body
// when the answer arrives) need no reference counting, and a Close racing a Read is
// harmless.

// minBodyBuffer is the first allocation for a body of unknown length (chunked).
const minBodyBuffer = 4 << 10

// errTooLarge is returned by readBody beyond the limit.
var errTooLarge = errors.New("request body too large")

// readBody reads body into a new buffer, at most limit bytes; contentLength is the
// request's ContentLength (-1 when unknown). A body of known length costs exactly one
// allocation.
func readBody(body io.Reader, contentLength, limit int64) ([]byte, error) {
	if contentLength > limit {
		return nil, errTooLarge
	}
	var b []byte
	if contentLength >= 0 {
		// One spare byte so that the final Read sees EOF without growing the buffer.
		b = make([]byte, 0, contentLength+1)
	} else {
		b = make([]byte, 0, min(minBodyBuffer, limit+1))
	}
	for {
		if len(b) == cap(b) {
			if int64(len(b)) > limit {
				break
			}
			// Grow, but never past limit+1: one byte beyond tells "too large".
			n := min(int64(max(2*cap(b), minBodyBuffer)), limit+1)
			nb := make([]byte, len(b), n)
			copy(nb, b)
			b = nb
		}
		n, err := body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, errTooLarge
			}
			return nil, err
		}
	}
	if int64(len(b)) > limit {
		return nil, errTooLarge
	}
	return b, nil
}

// bodyReadCloser returns a fresh reader over b in the form net/http treats as
// in-memory.
func bodyReadCloser(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }
