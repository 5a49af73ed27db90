/** What the management API answers (src/server/api/schemas.ts), as far as the console reads it. */

export interface Me {
  readonly role: 'admin' | 'user'
  readonly scope: 'admin' | 'inference' | 'read' | 'manage'
  readonly user: { readonly id: string; readonly name: string } | null
  readonly keyId?: string | null
}

export interface Gpu {
  readonly index: number
  readonly vendor?: string
  readonly name: string
  readonly uuid?: string | null
  readonly utilizationPercent: number | null
  readonly memoryUtilizationPercent?: number | null
  readonly memoryUsedBytes: number | null
  readonly memoryTotalBytes: number | null
  readonly temperatureC: number | null
  readonly powerDrawW: number | null
  readonly powerLimitW?: number | null
}

export interface Metrics {
  readonly cpuPercent?: number
  readonly memPercent?: number
  readonly memUsedBytes?: number
  readonly memTotalBytes?: number
  readonly diskPercent?: number
  readonly netRxRate?: number
  readonly netTxRate?: number
  readonly uptimeSeconds?: number
  readonly gpus?: readonly Gpu[]
}

/** A connected worker (`online: true`) or one the database knows (`online: false`). */
export interface Worker {
  readonly clientId: string
  readonly engineType: string | null
  readonly models: readonly string[]
  readonly hostname: string | null
  readonly os?: string | null
  readonly userId: string | null
  readonly online: boolean
  readonly connectedAt?: string
  readonly lastHeartbeatAt?: string
  readonly lastSeenAt?: string
  readonly inflight?: number
  readonly capacity?: number
  readonly remoteAddress?: string
  readonly metrics?: Metrics | null
}

export interface DailyStats {
  readonly day: string
  readonly heartbeats: number
  readonly avgCpuPercent: number | null
  readonly avgMemPercent: number | null
  readonly maxInflight: number
  readonly netInBytes: number
  readonly netOutBytes: number
}

export interface DeviceDaily {
  readonly day: string
  readonly deviceIndex: number
  readonly name: string
  readonly avgUtilizationPercent: number | null
  readonly avgTemperatureC: number | null
  readonly avgPowerW: number | null
}

export interface Heartbeat {
  readonly at: string
  readonly cpuPercent: number | null
  readonly memPercent: number | null
  readonly netInBytes: number | null
  readonly netOutBytes: number | null
  readonly inflight: number
  readonly extra: { readonly gpus?: readonly Gpu[]; readonly netRxRate?: number; readonly netTxRate?: number }
}

export interface WorkerStats {
  readonly clientId: string
  readonly daily: readonly DailyStats[]
  readonly deviceDaily: readonly DeviceDaily[]
  /** Newest first. */
  readonly heartbeats: readonly Heartbeat[]
}

export type KeyScope = 'inference' | 'read' | 'manage'

export interface ApiKey {
  readonly id: string
  readonly prefix: string
  readonly kind: 'api' | 'worker'
  readonly userId: string
  readonly name: string | null
  readonly scope: KeyScope
  readonly models: readonly string[] | null
  readonly rpmLimit: number | null
  readonly tpmLimit: number | null
  readonly expiresAt: string | null
  readonly revokedAt: string | null
  readonly createdAt: string
}

export interface NewKey extends ApiKey {
  /** The key itself: shown once. */
  readonly key: string
}

export interface UsageRow {
  readonly day: string
  readonly keyId: string
  readonly model: string
  readonly workerId: string
  readonly requests: number
  readonly errors: number
  readonly promptTokens: number
  readonly completionTokens: number
  readonly totalTokens: number
}

export interface RequestRow {
  readonly id: number
  readonly at: string
  readonly keyId: string
  readonly model: string
  readonly workerId: string | null
  readonly path: string
  readonly status: number
  readonly durationMs: number
  readonly totalTokens: number | null
}
