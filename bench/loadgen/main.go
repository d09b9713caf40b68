// loadgen drives a syncpoint-style rendezvous service (duet's or an anchor) over HTTP/1.1
// on loopback, and prints one JSON object with what it measured.
//
//	loadgen pairs -url U [-url2 U2] -concurrency 100 -duration 10s -warmup 2s
//	    C workers each complete pairs back to back: two POSTs on a fresh id, the second
//	    party sent to U2 when given (pairing across instances). Reports pairs/s and the
//	    pair-completion latency (both answers in) p50/p90/p99.
//	loadgen hold -url U -count 18000
//	    Holds COUNT first parties waiting at once, prints {"holding":COUNT} when the
//	    service's /healthz reports them all, waits for a line on stdin, then pairs them all
//	    and reports how many pairs completed.
//
// Bounded in count and time; it only talks to the URLs it is given (use loopback).
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func client(conns int) *http.Client {
	return &http.Client{
		Timeout: 120 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			DisableCompression:  true,
		},
	}
}

func post(c *http.Client, url string) (int, error) {
	resp, err := c.Post(url, "text/plain", strings.NewReader("p"))
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return float64(sorted[i].Microseconds()) / 1000
}

func pairs(args []string) {
	fs := flag.NewFlagSet("pairs", flag.ExitOnError)
	url := fs.String("url", "http://127.0.0.1:8080", "base URL of the first party's instance")
	url2 := fs.String("url2", "", "base URL of the second party's instance (default: -url)")
	concurrency := fs.Int("concurrency", 100, "pairs in flight at once")
	duration := fs.Duration("duration", 10*time.Second, "measured time")
	warmup := fs.Duration("warmup", 2*time.Second, "unmeasured time first")
	fs.Parse(args)
	if *url2 == "" {
		*url2 = *url
	}
	c := client(*concurrency * 2)
	run := time.Now().UnixNano()
	var measuring atomic.Bool
	var stop atomic.Bool
	var errors atomic.Int64
	latencies := make([][]time.Duration, *concurrency)
	var wg sync.WaitGroup
	for w := 0; w < *concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for n := 0; !stop.Load(); n++ {
				path := fmt.Sprintf("/wait-for-second-party/lg%d-%d-%d", run, w, n)
				start := time.Now()
				other := make(chan int, 1)
				go func() {
					status, err := post(c, *url2+path)
					if err != nil {
						status = -1
					}
					other <- status
				}()
				status, err := post(c, *url+path)
				status2 := <-other
				elapsed := time.Since(start)
				if err != nil || status != 200 || status2 != 200 {
					errors.Add(1)
					continue
				}
				if measuring.Load() {
					latencies[w] = append(latencies[w], elapsed)
				}
			}
		}(w)
	}
	time.Sleep(*warmup)
	measuring.Store(true)
	began := time.Now()
	time.Sleep(*duration)
	measuring.Store(false)
	seconds := time.Since(began).Seconds()
	stop.Store(true)
	wg.Wait()
	var all []time.Duration
	for _, l := range latencies {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"mode":        "pairs",
		"concurrency": *concurrency,
		"cross":       *url2 != *url,
		"pairs":       len(all),
		"seconds":     seconds,
		"pairs_per_s": float64(len(all)) / seconds,
		"p50_ms":      percentile(all, 0.50),
		"p90_ms":      percentile(all, 0.90),
		"p99_ms":      percentile(all, 0.99),
		"errors":      errors.Load(),
	})
}

func waiting(c *http.Client, url string) int {
	resp, err := c.Get(url + "/healthz")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var body struct{ Waiting int }
	json.NewDecoder(resp.Body).Decode(&body)
	return body.Waiting
}

func hold(args []string) {
	fs := flag.NewFlagSet("hold", flag.ExitOnError)
	url := fs.String("url", "http://127.0.0.1:8080", "base URL")
	count := fs.Int("count", 1000, "first parties to hold at once")
	fs.Parse(args)
	c := client(*count + 16)
	c.Transport.(*http.Transport).MaxConnsPerHost = 0
	run := time.Now().UnixNano()
	started := time.Now()
	results := make(chan int, *count)
	for i := 0; i < *count; i++ {
		go func(i int) {
			status, err := post(c, fmt.Sprintf("%s/wait-for-second-party/h%d-%d?timeout_ms=300000", *url, run, i))
			if err != nil {
				status = -1
			}
			results <- status
		}(i)
		if i%500 == 499 {
			time.Sleep(20 * time.Millisecond) // let the accept queue drain
		}
	}
	health := client(2)
	deadline := time.Now().Add(120 * time.Second)
	for waiting(health, *url) < *count {
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "only %d of %d parties are waiting\n", waiting(health, *url), *count)
			os.Exit(1)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ramp := time.Since(started).Seconds()
	json.NewEncoder(os.Stdout).Encode(map[string]any{"holding": *count, "ramp_seconds": ramp})
	bufio.NewReader(os.Stdin).ReadString('\n')
	seconds := make(chan int, *count)
	sem := make(chan struct{}, 256)
	for i := 0; i < *count; i++ {
		sem <- struct{}{}
		go func(i int) {
			defer func() { <-sem }()
			status, err := post(c, fmt.Sprintf("%s/wait-for-second-party/h%d-%d", *url, run, i))
			if err != nil {
				status = -1
			}
			seconds <- status
		}(i)
	}
	paired, errors := 0, 0
	for i := 0; i < 2**count; i++ {
		var status int
		if i < *count {
			status = <-results
		} else {
			status = <-seconds
		}
		if status == 200 {
			paired++
		} else {
			errors++
		}
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{"mode": "hold", "held": *count, "answers_200": paired, "errors": errors})
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen pairs|hold [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "pairs":
		pairs(os.Args[2:])
	case "hold":
		hold(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, "usage: loadgen pairs|hold [flags]")
		os.Exit(2)
	}
}
