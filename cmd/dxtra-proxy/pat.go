package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/dxtra-ai/dxtra-proxy/tokencache"
)

// maxPATFileBytes bounds what is read from DXTRA_PAT_FILE: a PAT is a UUID, so
// anything large is a mistake (a wrong path), not a token.
const maxPATFileBytes = 4 << 10

// readPATFile returns the PAT in path with surrounding whitespace removed. Its
// errors never contain the file's content.
func readPATFile(path string) (tokencache.Secret, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return tokencache.Secret{}, fmt.Errorf("%s does not exist", path)
		}
		return tokencache.Secret{}, fmt.Errorf("cannot read %s", path)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPATFileBytes+1))
	if err != nil {
		return tokencache.Secret{}, fmt.Errorf("cannot read %s", path)
	}
	if len(b) > maxPATFileBytes {
		return tokencache.Secret{}, fmt.Errorf("%s is larger than %d bytes; it should hold only the PAT", path, maxPATFileBytes)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return tokencache.Secret{}, fmt.Errorf("%s is empty", path)
	}
	return tokencache.NewSecret(string(b)), nil
}

// patSource holds the current PAT. With DXTRA_PAT it never changes; with
// DXTRA_PAT_FILE, watch re-reads the file and reports changes. Safe for
// concurrent use.
type patSource struct {
	path string
	cur  atomic.Pointer[tokencache.Secret]
}

func newPATSource(c *config) (*patSource, error) {
	s := &patSource{path: c.PATFile}
	pat := tokencache.NewSecret(strings.TrimSpace(c.PAT))
	if c.PATFile != "" {
		var err error
		if pat, err = readPATFile(c.PATFile); err != nil {
			return nil, configErrorf("DXTRA_PAT_FILE: %v", err)
		}
	}
	s.cur.Store(&pat)
	return s, nil
}

// PAT returns the current PAT.
func (s *patSource) PAT() (tokencache.Secret, error) { return *s.cur.Load(), nil }

// patPollInterval is how often DXTRA_PAT_FILE is re-read. Reading a few bytes
// every 2 s costs nothing measurable, and polling the content (rather than
// inotify) survives the symlink swaps Kubernetes uses to update Secret volumes.
const patPollInterval = 2 * time.Second

// watch re-reads the PAT file every interval until ctx ends and calls changed
// after storing a new, different PAT. A file that vanishes or turns empty
// keeps the last good PAT and is reported once.
func (s *patSource) watch(ctx context.Context, interval time.Duration, log *zap.Logger, changed func()) error {
	if s.path == "" {
		return nil
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var failing bool
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		pat, err := readPATFile(s.path)
		if err != nil {
			if !failing {
				log.Warn("pat file unreadable; keeping the last good PAT", zap.String("error", err.Error()))
				failing = true
			}
			continue
		}
		if failing {
			log.Info("pat file readable again")
			failing = false
		}
		if pat.Equal(*s.cur.Load()) {
			continue
		}
		s.cur.Store(&pat)
		log.Info("pat file changed; exchanging the new PAT", zap.String("pat", pat.Fingerprint()))
		changed()
	}
}
