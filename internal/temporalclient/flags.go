package temporalclient

import (
	"errors"
	"os"

	"github.com/spf13/pflag"
)

// The environment variables a connection flag falls back to when it is not on the command
// line: the Temporal CLI's names, so that one environment serves both.
const (
	EnvAddress   = "TEMPORAL_ADDRESS"
	EnvNamespace = "TEMPORAL_NAMESPACE"
	EnvAPIKey    = "TEMPORAL_API_KEY"
)

// errCertKeyPair is the same mistake whether the flags or a Config made it.
var errCertKeyPair = errors.New("--tls-cert and --tls-key go together: give both, or neither")

// Flags are the connection flags every cdswap program has, registered by AddFlags and read
// back, with the environment, by Config.
type Flags struct {
	fs  *pflag.FlagSet
	cfg Config // the flags' values
	tls bool   // --tls, which counts only when given: unset, TLS follows the other settings
}

// AddFlags registers the connection flags on fs (a cobra command's Flags or
// PersistentFlags): --address, --namespace (-n), --tls, --tls-cert, --tls-key, --tls-ca,
// --tls-server-name and --api-key.
func AddFlags(fs *pflag.FlagSet) *Flags {
	f := &Flags{fs: fs}
	c := &f.cfg
	fs.StringVar(&c.Address, "address", DefaultAddress, "Temporal frontend host:port (env "+EnvAddress+")")
	fs.StringVarP(&c.Namespace, "namespace", "n", DefaultNamespace, "Temporal namespace (env "+EnvNamespace+")")
	fs.BoolVar(&f.tls, "tls", false, "use TLS (on by default with --api-key or any --tls-* flag; --tls=false forces plain text)")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "client certificate (PEM) for mTLS; needs --tls-key")
	fs.StringVar(&c.TLSKey, "tls-key", "", "client certificate's private key (PEM) for mTLS")
	fs.StringVar(&c.TLSCA, "tls-ca", "", "CA certificates (PEM) to verify the server with (default: the system's)")
	fs.StringVar(&c.TLSServerName, "tls-server-name", "", "server name to verify in the server's certificate (default: the host of --address)")
	fs.StringVar(&c.APIKey, "api-key", "", "API key for Temporal Cloud (env "+EnvAPIKey+"); implies TLS unless --tls=false")
	return f
}

// Config returns the connection settings of the parsed command line: a flag given there
// wins, else its environment variable if set, else the flag's default. getenv reads the
// environment (nil = os.Getenv). The TLS files are not read yet (Config.Options does);
// the errors are about the command line itself: an empty namespace, half a client
// certificate.
func (f *Flags) Config(getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	c := f.cfg
	for _, e := range []struct {
		flag, env string
		value     *string
	}{{"address", EnvAddress, &c.Address}, {"namespace", EnvNamespace, &c.Namespace}, {"api-key", EnvAPIKey, &c.APIKey}} {
		if v := getenv(e.env); v != "" && !f.fs.Changed(e.flag) {
			*e.value = v
		}
	}
	if f.fs.Changed("tls") {
		c.TLS, c.NoTLS = f.tls, !f.tls
	}
	switch {
	case c.Namespace == "":
		return Config{}, errors.New("--namespace is empty: name a namespace, or leave the flag out for " + DefaultNamespace)
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return Config{}, errCertKeyPair
	}
	return c, nil
}
