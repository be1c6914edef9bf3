package proxy

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
)

// maxPooledBody is the largest request buffer kept for reuse; larger ones (up to
// MaxBodyBytes) are left to the garbage collector so that one big request does not pin
// its memory in the pool.
const maxPooledBody = 256 << 10

// bodyBuf holds a request body read once, so that it can be sent again on a retry.
// It goes back to bodyPool when the handler and every reader over it are done.
type bodyBuf struct {
	b    []byte
	refs atomic.Int32
}

var bodyPool = sync.Pool{New: func() any { return &bodyBuf{b: make([]byte, 0, 4<<10)} }}

// errTooLarge is returned by readBody beyond the limit.
var errTooLarge = errors.New("request body too large")

// readBody reads r's body into a pooled buffer, at most limit bytes; contentLength is
// r.ContentLength (-1 when unknown). The buffer starts with one reference, the
// caller's.
func readBody(body io.Reader, contentLength, limit int64) (*bodyBuf, error) {
	if contentLength > limit {
		return nil, errTooLarge
	}
	bb := bodyPool.Get().(*bodyBuf)
	bb.refs.Store(1)
	b := bb.b[:0]
	if contentLength >= 0 && int64(cap(b)) <= contentLength {
		// One spare byte so that the final Read sees EOF without growing the buffer.
		b = make([]byte, 0, contentLength+1)
	}
	for {
		if len(b) == cap(b) {
			if int64(len(b)) > limit {
				break
			}
			// Grow, but never past limit+1: one byte beyond tells "too large".
			n := min(int64(max(2*cap(b), 4<<10)), limit+1)
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
			bb.b = b
			bb.release()
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, errTooLarge
			}
			return nil, err
		}
	}
	bb.b = b
	if int64(len(b)) > limit {
		bb.release()
		return nil, errTooLarge
	}
	return bb, nil
}

// release drops one reference; the last one returns the buffer to the pool.
func (bb *bodyBuf) release() {
	if bb.refs.Add(-1) != 0 {
		return
	}
	if cap(bb.b) <= maxPooledBody {
		bb.b = bb.b[:0]
		bodyPool.Put(bb)
	}
}

// bodyReader reads a bodyBuf. net/http may Close a request body from one goroutine
// while another still reads it, so Read and Close take a (normally uncontended) lock:
// the buffer can only go back to the pool once no Read is in progress.
type bodyReader struct {
	mu     sync.Mutex
	bb     *bodyBuf // nil once closed
	off    int
	closed bool
}

// open points r at bb and takes a reference on it.
func (r *bodyReader) open(bb *bodyBuf) {
	bb.refs.Add(1)
	r.bb, r.off, r.closed = bb, 0, false
}

func (r *bodyReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if r.off >= len(r.bb.b) {
		return 0, io.EOF
	}
	n := copy(p, r.bb.b[r.off:])
	r.off += n
	return n, nil
}

func (r *bodyReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.closed = true
		r.bb.release()
		r.bb = nil
	}
	return nil
}
