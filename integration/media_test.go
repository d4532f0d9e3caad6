package integration

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/internal/xensim/isofs"
	"github.com/cdswap/cdswap/workflows"
)

// TestHardLinkedISO inserts, through the worker, a hard link inside the ISO root to a real
// ISO image kept outside it: the media rule tells what a file holds, not where else it is
// linked, so it is accepted (TestRefused has a hard link to a file that is no CD image).
func TestHardLinkedISO(t *testing.T) {
	need(t)
	t.Parallel()
	h := startHost(t, xensim.Config{
		HostName: hostName("hardlink"),
		Domains:  []xensim.DomainSpec{{Kind: xensim.KindStubdom}, {Kind: xensim.KindDom0}},
		QEMU:     xensim.QEMUFake,
	})
	startWorker(t, h, workerOpts{})
	linked := filepath.Join(testenv.SocketDir(t), "linked.iso")
	require.NoError(t, isofs.Write(linked, "LINKED", map[string][]byte{"L.TXT": []byte("l\n")}))
	require.NoError(t, os.Link(linked, iso(h, "linked.iso")))
	for _, kind := range []xensim.Kind{xensim.KindStubdom, xensim.KindDom0} {
		t.Run(string(kind), func(t *testing.T) {
			swapOK(t, h, domainOf(t, h, kind), iso(h, "linked.iso"), workflows.OutcomeChanged)
		})
	}
}
