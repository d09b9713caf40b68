module duet/bench/syncpoint-go

go 1.19
