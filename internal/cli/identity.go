package cli

import (
	"os/user"
	"strings"

	"github.com/cdswap/cdswap/internal/temporalclient"
)

// Where a requester comes from on a plain connection (the authenticated ones are
// temporalclient's SourceMTLS, SourceJWT and SourceAPIKey).
const (
	// requesterFromFlag: --requester, on a connection that authenticates nobody.
	requesterFromFlag = "flag"
	// requesterFromOS: the OS account ($SUDO_USER, $USER, or the process's user).
	requesterFromOS = "os"
)

// requesterOf is who asks and how that is known: the identity the connection authenticates
// as (the client certificate's subject, the API key's principal), else the --requester flag,
// else the user sudo ran as, else $USER, else the process's account. The second value is the
// source recorded with it (the memo's "requester_source"). A certificate that cannot be read
// counts as none here: dialing reports it.
func (a *App) requesterOf(flag string) (name, source string) {
	if p, err := a.cfg.Principal(); err == nil && p.Name != "" {
		return p.Name, p.Source
	}
	if v := strings.TrimSpace(flag); v != "" {
		return v, requesterFromFlag
	}
	for _, v := range []string{a.getenv("SUDO_USER"), a.getenv("USER")} {
		if v = strings.TrimSpace(v); v != "" {
			return v, requesterFromOS
		}
	}
	// Cron jobs and CI runners often have no $USER; the account is still who asked.
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username, requesterFromOS
	}
	return "unknown", requesterFromOS
}

// checkRequesterFlag refuses a --requester that differs from the identity the connection
// authenticates as: the record must say who was let in, not who they said they were.
func (a *App) checkRequesterFlag(flag string) error {
	flag = strings.TrimSpace(flag)
	if flag == "" {
		return nil
	}
	p, err := a.cfg.Principal()
	if err != nil || p.Name == "" || p.Name == flag {
		return nil
	}
	what := "the API key"
	if p.Source == temporalclient.SourceMTLS {
		what = "the client certificate"
	}
	return usagef("--requester %q: this connection authenticates as %q (%s), which is recorded as the requester: leave --requester out",
		flag, p.Name, what)
}
