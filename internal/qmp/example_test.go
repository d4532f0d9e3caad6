package qmp_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/qmp/qmptest"
)

// Example changes the medium of drive ide-5632 the way cdswap does for a guest whose QEMU runs
// in dom0: pass the image's descriptor into an fd set, point the drive at /dev/fdset/N with
// an explicit format, check query-block, and release the set. It talks to the fake QEMU of
// package qmptest; with a real QEMU the socket would be /var/run/xen/qmp-libxl-<domid>.
func Example() {
	dir, err := os.MkdirTemp("", "qmpexample")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "qmp.sock")
	fake := qmptest.New(qmptest.Options{CDROMs: []string{"ide-5632"}})
	defer fake.Close()
	if err := fake.Listen(sock); err != nil {
		log.Fatal(err)
	}
	image := filepath.Join(dir, "disc.iso")
	if err := os.WriteFile(image, make([]byte, 4096), 0o644); err != nil {
		log.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := qmp.Dial(ctx, sock)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println("QEMU", c.Version().Major, c.Version().Minor)

	f, err := os.Open(image) // O_RDONLY: the CD-ROM is read-only
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	set, err := c.AddFD(ctx, f, nil, "raw:"+image)
	if err != nil {
		log.Fatal(err)
	}
	err = c.BlockdevChangeMedium(ctx, qmp.ChangeMediumArgs{
		ID:       "ide-5632",
		Filename: fmt.Sprintf("/dev/fdset/%d", set.FdsetID),
		Format:   "raw", // never let QEMU probe the format
	})
	if err != nil {
		log.Fatal(err)
	}
	// The medium holds its own duplicate, so the set can be released at once.
	if err := c.RemoveFD(ctx, set.FdsetID, nil); err != nil {
		log.Fatal(err)
	}

	blocks, err := c.QueryBlock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, b := range blocks {
		if b.Device == "ide-5632" && b.Inserted != nil {
			fmt.Println(b.Device, b.Inserted.File, b.Inserted.Drv, "tray open:", *b.TrayOpen)
		}
	}

	err = c.Eject(ctx, "ide-9999", false)
	fmt.Println("no such drive:", errors.Is(err, qmp.ErrDeviceNotFound))
	// Output:
	// QEMU 7 2
	// ide-5632 /dev/fdset/0 raw tray open: false
	// no such drive: true
}
