// Seed 000's kata, "The Rate-Limited Fan-Out Client", written as its constraints ask: a
// golang.org/x/time/rate.Limiter for QPS + burst, a golang.org/x/sync/semaphore.Weighted for
// MaxInFlight (so at most MaxInFlight goroutines exist at once), http.NewRequestWithContext,
// one http.Client with a configured Transport and Timeout, no time.Sleep, and fail-fast: the
// first error cancels everything and is returned.
//
// Logging: the kata asks for log/slog, which Go 1.19 (Debian's golang-go here) does not have;
// per-request logging is off on both sides of the comparison (tollgate logs through `tracing`
// at debug level, with no subscriber installed), so it is left out rather than faked.
//
//	GO111MODULE=off GOPATH=/usr/share/gocode:$HOME/go go build -o target/go-kata ./benches/go/kata
//	target/go-kata -url 'http://127.0.0.1:18080/ok/{key}' -keys 20000 -in-flight 8 -rate 1e6 -burst 20
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
	"golang.org/x/time/rate"
)

// FanOutClient fetches user widgets under a rate limit and a cap on requests in flight.
type FanOutClient struct {
	client      *http.Client
	limiter     *rate.Limiter
	sem         *semaphore.Weighted
	urlTemplate string
}

// NewFanOutClient builds the client: one reused http.Client whose Transport keeps enough idle
// connections for every request in flight.
func NewFanOutClient(urlTemplate string, qps float64, burst int, maxInFlight int) *FanOutClient {
	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        maxInFlight,
		MaxIdleConnsPerHost: maxInFlight,
		IdleConnTimeout:     90 * time.Second,
	}
	return &FanOutClient{
		client:      &http.Client{Transport: transport, Timeout: 30 * time.Second},
		limiter:     rate.NewLimiter(rate.Limit(qps), burst),
		sem:         semaphore.NewWeighted(int64(maxInFlight)),
		urlTemplate: urlTemplate,
	}
}

func (c *FanOutClient) fetch(ctx context.Context, userID int) ([]byte, error) {
	url := strings.Replace(c.urlTemplate, "{key}", strconv.Itoa(userID), 1)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("user %d: status %d", userID, resp.StatusCode)
	}
	return body, nil
}

// FetchAll fetches every user's widgets; the first error cancels the rest and is returned.
func (c *FanOutClient) FetchAll(ctx context.Context, userIDs []int) (map[int][]byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		firstErr error
		results  = make(map[int][]byte, len(userIDs))
	)
	for _, id := range userIDs {
		// Backpressure: a goroutine starts only with a permit, so at most MaxInFlight exist.
		if err := c.sem.Acquire(ctx, 1); err != nil {
			break // cancelled: a request failed, or the caller gave up
		}
		if err := c.limiter.Wait(ctx); err != nil {
			c.sem.Release(1)
			break
		}
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			defer c.sem.Release(1)
			body, err := c.fetch(ctx, id)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
					cancel()
				}
				return
			}
			results[id] = body
		}(id)
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil && len(results) < len(userIDs) {
		return nil, err
	}
	return results, nil
}

func main() {
	url := flag.String("url", "http://127.0.0.1:18080/ok/{key}", "URL template; {key} is replaced")
	keys := flag.Int("keys", 20000, "user IDs to fetch (0..keys)")
	inFlight := flag.Int("in-flight", 8, "max requests in flight")
	qps := flag.Float64("rate", 1e6, "requests per second")
	burst := flag.Int("burst", 20, "burst")
	flag.Parse()

	client := NewFanOutClient(*url, *qps, *burst, *inFlight)
	ids := make([]int, *keys)
	for i := range ids {
		ids[i] = i
	}
	started := time.Now()
	results, err := client.FetchAll(context.Background(), ids)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	fmt.Printf("go kata: %d results in %v\n", len(results), time.Since(started))
}
