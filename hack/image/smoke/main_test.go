package main

import (
	"io"
	"net/http/httptest"
	"os"
	"testing"

	. "github.com/onsi/gomega"
)

// TestHandler: the smoke server answers with its host name, which tells a client which Pod it reached.
func TestHandler(t *testing.T) {
	g := NewWithT(t)
	srv := httptest.NewServer(handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/anything")
	g.Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	g.Expect(err).NotTo(HaveOccurred())
	host, err := os.Hostname()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(resp.StatusCode).To(Equal(200))
	g.Expect(string(body)).To(Equal(host + "\n"))
}
