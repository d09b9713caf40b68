module duet/bench/loadgen

go 1.19
