// The one Node global the tests use (a real macrotask to let promises settle
// while timers are faked); declared here rather than pulling in @types/node,
// which would also make Node's globals look available to the client's source.
declare function setImmediate(callback: () => void): unknown;
