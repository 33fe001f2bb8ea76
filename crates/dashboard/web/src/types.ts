// The shapes of the daemon's /api/v1/ui answers (crates/dashboard/src/views.rs and the
// behaviours it reads).

export interface Res {
  cpu: { cores: number };
  ram: { size: number };
  disk: { size: number };
}

export interface Amounts {
  cpu_cores: number;
  ram_bytes: number;
  disk_bytes: number;
}

export interface Sample {
  at_ms: number;
  onboarded: boolean;
  total: Amounts;
  free: Amounts;
  allocated: Amounts;
  committed: Amounts;
}

export interface Health {
  healthy: boolean;
  message: string;
  checks: number;
}

export interface NodeView {
  status?: { did: string; peer_id: string; version: string; uptime_s: number; listen_addrs: string[]; connected_peers: number };
  self?: {
    addrs: string[];
    reachability: {
      nat: string;
      summary: string;
      public_addrs: string[];
      relays: { relay: string; reserved: boolean }[];
      hole_punches: { succeeded: number; failed: number };
    };
  };
  peers?: { peers: { peer_id: string; did: string | null; addrs: string[]; rtt_ms: number | null; path: string }[] };
  onboarding?: { onboarded: boolean; onboarded_resources?: Res; free?: Res; committed?: Res; allocated?: Res };
  hosted?: {
    allocations: {
      id: string;
      ensemble_id: string;
      node_id: string;
      name: string;
      executor: string;
      status: string;
      exit_code: number | null;
      started_ms: number | null;
      health?: Health;
      restarts: number;
    }[];
  };
}

export interface Event {
  seq: number;
  at_ms: number;
  phase: string;
  message: string;
}

export interface DeploymentSummary {
  id: string;
  status: string;
  reason: string | null;
  owner: string;
  created_ms: number;
  rounds: number;
  nodes: Record<string, string>;
  allocations: Record<string, string>;
  events?: Event[];
}

export interface DeploymentDetail {
  summary: DeploymentSummary;
  timeline: { phase: string; start_ms: number; end_ms: number | null; events: number }[];
  manifest: {
    nodes: Record<string, { peer: string; did: string; location: string }>;
    allocations: Record<
      string,
      {
        id: string;
        node_id: string;
        status: string;
        exit_code: number | null;
        ports: Record<string, number>;
        ip?: string;
        dns?: string;
        health?: Health;
        restarts: number;
      }
    >;
  };
  now_ms: number;
}
