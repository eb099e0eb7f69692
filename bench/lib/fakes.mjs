/**
 * Fake connections for the microbenchmarks: every pool gets the same plain object per connection and
 * the same already-resolved promises for connect, validate and destroy, so the numbers compare the
 * pools' bookkeeping and nothing else.
 */
import { EventEmitter } from 'node:events';

let nextId = 1;

/** A connection as the fakes hand it out: an object with an id, nothing to do. */
export function fakeConnection() {
  return { id: nextId++ };
}

/** steadfast's `Driver` over fake connections. */
export function fakeDriver() {
  return {
    connect: () => Promise.resolve(fakeConnection()),
    validate: () => Promise.resolve(),
    needsReset: () => false,
    reset: () => Promise.resolve(),
    destroy: () => Promise.resolve(),
  };
}

const EMPTY_RESULT = Object.freeze({
  command: 'SELECT',
  rowCount: 1,
  rows: Object.freeze([{ '?column?': 1 }]),
});

/**
 * A `pg.Client` stand-in for the `Client` option of pg-pool and of steadfast's Pool: an EventEmitter
 * with `connect`, `query` and `end` in both pg's promise and callback forms, answering every query
 * with the same result on the next microtask. `getTransactionStatus()` says idle, as pg does after a
 * statement outside a transaction, so steadfast's reset-on-release check sees a clean connection.
 */
export class FakePgClient extends EventEmitter {
  constructor() {
    super();
    this.id = nextId++;
  }

  connect(callback) {
    if (callback) {
      queueMicrotask(() => callback(undefined));
      return undefined;
    }
    return Promise.resolve();
  }

  query(_config, values, callback) {
    const done = typeof values === 'function' ? values : callback;
    if (done) {
      queueMicrotask(() => done(undefined, EMPTY_RESULT));
      return undefined;
    }
    return Promise.resolve(EMPTY_RESULT);
  }

  getTransactionStatus() {
    return 'I';
  }

  end(callback) {
    this.emit('end');
    if (callback) {
      queueMicrotask(() => callback(undefined));
      return undefined;
    }
    return Promise.resolve();
  }
}

/** tarn's and generic-pool's factory over fake connections. */
export const fakeFactory = {
  create: () => Promise.resolve(fakeConnection()),
  destroy: () => Promise.resolve(),
};
