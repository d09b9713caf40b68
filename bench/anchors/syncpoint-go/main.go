// Benchmark anchor: the minimal syncpoint on Go's net/http (standard library only).
// POST /wait-for-second-party/{id} pairs two parties (200, each gets the other's body);
// a lone first party gets 408 after ?timeout_ms= or 10 s; a waiting party that hangs up
// (request context done) frees its slot.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

type waiting struct {
	payload []byte
	wake    chan []byte
}

var (
	mu    sync.Mutex
	slots = map[string]*waiting{}
)

func reply(w http.ResponseWriter, status int, body string) {
	w.Header().Set("content-type", "application/json")
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func paired(role string, peer []byte) string {
	return fmt.Sprintf(`{"status":"paired","role":%q,"peer_payload":%q}`, role, peer)
}

func handle(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == "/healthz" {
		mu.Lock()
		n := len(slots)
		mu.Unlock()
		reply(w, 200, fmt.Sprintf(`{"status":"ok","waiting":%d}`, n))
		return
	}
	id := strings.TrimPrefix(r.URL.Path, "/wait-for-second-party/")
	if r.Method != http.MethodPost || id == r.URL.Path || id == "" || len(id) > 128 {
		reply(w, 404, `{"code":"not_found"}`)
		return
	}
	timeout := 10 * time.Second
	if v, err := strconv.Atoi(r.URL.Query().Get("timeout_ms")); err == nil && v > 0 {
		timeout = time.Duration(v) * time.Millisecond
	}
	payload, _ := io.ReadAll(io.LimitReader(r.Body, 64*1024))
	mu.Lock()
	if first, ok := slots[id]; ok {
		delete(slots, id)
		mu.Unlock()
		first.wake <- payload // buffered: never blocks
		reply(w, 200, paired("second", first.payload))
		return
	}
	me := &waiting{payload: payload, wake: make(chan []byte, 1)}
	slots[id] = me
	mu.Unlock()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	leave := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if slots[id] == me {
			delete(slots, id)
			return true
		}
		return false // paired meanwhile: the wake-up is in the channel
	}
	select {
	case peer := <-me.wake:
		reply(w, 200, paired("first", peer))
	case <-timer.C:
		if leave() {
			reply(w, 408, `{"code":"timeout"}`)
		} else {
			reply(w, 200, paired("first", <-me.wake))
		}
	case <-r.Context().Done():
		leave()
	}
}

func main() {
	port := "8082"
	if len(os.Args) > 1 {
		port = os.Args[1]
	}
	fmt.Fprintf(os.Stderr, "syncpoint-go listening on http://127.0.0.1:%s\n", port)
	server := &http.Server{Addr: "127.0.0.1:" + port, Handler: http.HandlerFunc(handle)}
	if err := server.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
