package temporalclient

import (
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFlagsConfig(t *testing.T) {
	env := map[string]string{EnvAddress: "env.example:7233", EnvNamespace: "env-ns", EnvAPIKey: "env-key"}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    Config
		wantErr string
	}{
		{name: "defaults", want: Config{Address: DefaultAddress, Namespace: DefaultNamespace}},
		{name: "environment", env: env, want: Config{Address: "env.example:7233", Namespace: "env-ns", APIKey: "env-key"}},
		{name: "flags win over the environment", env: env,
			args: []string{"--address", "flag.example:7233", "-n", "flag-ns", "--api-key", "flag-key"},
			want: Config{Address: "flag.example:7233", Namespace: "flag-ns", APIKey: "flag-key"}},
		{name: "a flag given empty is not filled from the environment", env: env, args: []string{"--address="},
			want: Config{Namespace: "env-ns", APIKey: "env-key"}},
		{name: "tls on", args: []string{"--tls"}, want: Config{Address: DefaultAddress, Namespace: DefaultNamespace, TLS: true}},
		{name: "tls off", args: []string{"--tls=false"}, want: Config{Address: DefaultAddress, Namespace: DefaultNamespace, NoTLS: true}},
		{name: "tls files", args: []string{"--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-ca", "ca.pem", "--tls-server-name", "t.example"},
			want: Config{Address: DefaultAddress, Namespace: DefaultNamespace, TLSCert: "c.pem", TLSKey: "k.pem", TLSCA: "ca.pem", TLSServerName: "t.example"}},
		{name: "empty namespace", args: []string{"--namespace", ""}, wantErr: "--namespace is empty"},
		{name: "cert without key", args: []string{"--tls-cert", "c.pem"}, wantErr: "--tls-cert and --tls-key go together"},
		{name: "key without cert", args: []string{"--tls-key", "k.pem"}, wantErr: "--tls-cert and --tls-key go together"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			f := AddFlags(fs)
			require.NoError(t, fs.Parse(tt.args))
			got, err := f.Config(func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				assert.ErrorContains(t, err, tt.wantErr, "Config() of %q", tt.args)
				return
			}
			require.NoError(t, err, "Config() of %q", tt.args)
			assert.Equal(t, tt.want, got, "Config() of %q with environment %v", tt.args, tt.env)
		})
	}
}

// TestFlagsConfigProcessEnvironment: a nil getenv reads the process's environment.
func TestFlagsConfigProcessEnvironment(t *testing.T) {
	t.Setenv(EnvNamespace, "from-process")
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	f := AddFlags(fs)
	require.NoError(t, fs.Parse(nil))
	got, err := f.Config(nil)
	require.NoError(t, err)
	assert.Equal(t, "from-process", got.Namespace)
}

// TestAddFlagsNames pins the flag names and the shorthand the programs and their docs use.
func TestAddFlagsNames(t *testing.T) {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	AddFlags(fs)
	var names []string
	fs.VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
	assert.ElementsMatch(t, []string{"address", "namespace", "tls", "tls-cert", "tls-key", "tls-ca", "tls-server-name", "api-key"}, names)
	assert.Equal(t, "namespace", fs.ShorthandLookup("n").Name)
}
