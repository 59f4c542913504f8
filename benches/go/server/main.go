// The loopback API both fan-out clients fetch from in the Go-kata comparison
// (benches/go/run.sh): GET /ok/{key} answers 200 with a small body naming the key, over
// keep-alive connections (Go's net/http server: a goroutine per connection).
//
//	GO111MODULE=off go run ./benches/go/server 127.0.0.1:18080
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
)

func main() {
	addr := "127.0.0.1:18080"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	http.HandleFunc("/ok/", func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.URL.Path, "/ok/")
		body := fmt.Sprintf("{\"key\":%q,\"widgets\":[1,2,3]}\n", key)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		_, _ = w.Write([]byte(body))
	})
	log.Printf("serving on http://%s/ok/{key}", addr)
	log.Fatal(http.ListenAndServe(addr, nil))
}
