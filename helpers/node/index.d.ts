import type { Server } from 'http';
import type { Socket } from 'net';

export interface ServeOptions {
  /** The socket's name in LISTEN_FDNAMES (default: the first passed). */
  name?: string;
  /** What to bind when no socket was passed (default 8080, all addresses). */
  port?: number;
  host?: string;
  /** ms a keep-alive connection must be idle, nothing received, before it is closed (1000). */
  idleGrace?: number;
  /** ms requests in flight have once the drain begins (30000). */
  drainTimeout?: number;
  /** Called once for each upgraded connection (WebSocket) when the drain begins. */
  onDrain?: (socket: Socket) => void;
  /** Exit the process with status 0 once drained (default true). */
  exit?: boolean;
  /** Signals that start the drain (default SIGTERM, SIGINT). */
  signals?: NodeJS.Signals[];
}

export interface DrainStats { conns: number; idleClosed: number; cut: number; ms: number }

export function serve(server: Server, opts?: ServeOptions): { drain(): Promise<DrainStats> };
export function listenFds(): { fd: number; name: string }[];
export function listenTarget(name?: string): { fd: number } | null;
