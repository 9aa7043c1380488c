// Command smoke is the application of the smoke Pod on CAPR's local nodes: an HTTP server on :8080 (or $PORT) that
// answers every request with its host name, so a client sees which Pod, on which node, it reached.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"time"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	srv := &http.Server{Addr: ":" + port, Handler: handler(), ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 8 << 10}
	log.Printf("Serving the host name on :%s", port)
	log.Fatal(srv.ListenAndServe())
}

// handler answers every request with the host name and a newline.
func handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		host, err := os.Hostname()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, host)
	})
}
