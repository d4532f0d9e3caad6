package xs_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/cdswap/cdswap/internal/xs"
	"github.com/cdswap/cdswap/internal/xs/xenstored"
)

// exampleServer runs an in-memory xenstored for the examples; a real program dials "" to
// reach the host's xenstored.
func exampleServer() (path string, stop func()) {
	dir, err := os.MkdirTemp("", "cds")
	if err != nil {
		log.Fatal(err)
	}
	path = filepath.Join(dir, "xenstored.sock")
	ln, err := xenstored.Listen(path)
	if err != nil {
		log.Fatal(err)
	}
	srv := xenstored.New(xenstored.Config{})
	go srv.Serve(ln)
	return path, func() { srv.Close(); os.RemoveAll(dir) }
}

// Update reruns the read-modify-write when another writer commits first.
func ExampleClient_Update() {
	path, stop := exampleServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := xs.Dial(ctx, path)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	for range 3 {
		err = c.Update(ctx, func(tx *xs.Tx) error {
			v, err := tx.Read(ctx, "/counter")
			if errors.Is(err, xs.ErrNotFound) {
				v = "0"
			} else if err != nil {
				return err
			}
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("counter %q: %w", v, err)
			}
			return tx.Write(ctx, "/counter", strconv.Itoa(n+1))
		})
		if err != nil {
			log.Fatal(err)
		}
	}
	v, err := c.Read(ctx, "/counter")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(v)
	// Output: 3
}

// A watch fires once at once, then on every change at or below its path.
func ExampleClient_Watch() {
	path, stop := exampleServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := xs.Dial(ctx, path)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	const be = "/local/domain/0/backend/vbd/5/5632"
	w, err := c.Watch(ctx, be, "state")
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close(ctx)
	fmt.Println((<-w.Events()).Path)

	if err := c.Write(ctx, be+"/state", "4"); err != nil {
		log.Fatal(err)
	}
	ev := <-w.Events()
	fmt.Println(ev.Path, ev.Token)
	// Output:
	// /local/domain/0/backend/vbd/5/5632
	// /local/domain/0/backend/vbd/5/5632/state state
}
