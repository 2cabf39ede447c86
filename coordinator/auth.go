package coordinator

// healthPrefix is the gRPC health service, which answers without the job
// token (probes carry none).
const healthPrefix = "/grpc.health.v1.Health/"
