package temporalclient

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/cdswap/cdswap/internal/termtext"
)

// Where a Principal's name comes from, as cdswap records it (ChangeMediumInput's
// RequesterSource, the memo's "requester_source").
const (
	// SourceMTLS: the subject of the client certificate the connection presents (--tls-cert),
	// which the server checks against its CAs.
	SourceMTLS = "mtls"
	// SourceJWT: the "sub" claim of an API key that is a JWT, read without checking its
	// signature (the server checks the key; cdswap only reads who it names).
	SourceJWT = "api-key-jwt-unverified"
	// SourceAPIKey: an API key that names nobody cdswap can read; the name is "api-key".
	SourceAPIKey = "api-key"
)

// MaxPrincipal bounds a Principal's name (workflows.MaxRequester): a longer subject is cut.
const MaxPrincipal = 256

// Principal is who a connection authenticates as.
type Principal struct {
	// Name is the certificate's subject ("CN=alice,OU=ops,O=Example"), the JWT's sub claim,
	// or "api-key"; "" on a connection that authenticates nobody. Control characters in it
	// are escaped (termtext.Escape) and it is at most MaxPrincipal bytes.
	Name string
	// Source is SourceMTLS, SourceJWT or SourceAPIKey; "" with Name.
	Source string
}

// Principal returns who c's connection authenticates as: the client certificate's subject
// when c has one (mTLS), else the API key's principal (a JWT's sub claim, or "api-key"),
// else the zero Principal (a plain connection, or TLS without a client certificate). Its
// errors are about the certificate file, as Options reports them.
func (c Config) Principal() (Principal, error) {
	switch {
	case c.TLSCert != "" && c.TLSKey != "":
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return Principal{}, fmt.Errorf("load client certificate %s and key %s: %w", c.TLSCert, c.TLSKey, err)
		}
		leaf := cert.Leaf
		if leaf == nil {
			if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
				return Principal{}, fmt.Errorf("parse client certificate %s: %w", c.TLSCert, err)
			}
		}
		return Principal{Name: principalName(leaf.Subject.String()), Source: SourceMTLS}, nil
	case c.APIKey != "":
		if sub := jwtSubject(c.APIKey); sub != "" {
			return Principal{Name: principalName(sub), Source: SourceJWT}, nil
		}
		return Principal{Name: "api-key", Source: SourceAPIKey}, nil
	}
	return Principal{}, nil
}

// jwtSubject returns the "sub" claim of key if key is a JWT (three base64url parts, the
// middle one a JSON object), else "". The signature is not checked: the server does that.
func jwtSubject(key string) string {
	parts := strings.Split(key, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return ""
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return ""
	}
	return strings.TrimSpace(claims.Sub)
}

// principalName escapes what could steer a terminal and cuts the name to MaxPrincipal bytes
// at a character boundary: a certificate's subject is whatever its CA signed. A name that
// needs no escape keeps its backslashes as they are ("CN=Doe\, Jane" is the subject's own
// quoting, RFC 4514).
func principalName(s string) string {
	if plain := strings.ReplaceAll(s, `\`, ""); termtext.Escape(plain) != plain {
		s = termtext.Escape(s)
	}
	if len(s) <= MaxPrincipal {
		return s
	}
	cut := MaxPrincipal
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
