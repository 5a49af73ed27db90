import { X509Certificate } from 'node:crypto'
import { existsSync } from 'node:fs'
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join } from 'node:path'
import type { PeerCertificate, SecureContextOptions, TLSSocket } from 'node:tls'
import { checkServerIdentity, connect as tlsConnect } from 'node:tls'
import { generate } from 'selfsigned'
import { ErrorCodes, FabricError } from '../errors/index.js'

/** A certificate and key in PEM, with the leaf's SHA-256 fingerprint (`AA:BB:...`). */
export interface CertificatePair {
  readonly cert: string
  readonly key: string
  readonly fingerprint256: string
  readonly certPath?: string
  readonly keyPath?: string
}

/** Everything TLS 1.3 only: TLS 1.2 and older are refused on every fabric link. */
export const TLS13 = { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' } as const satisfies SecureContextOptions

/**
 * Validity of the self-signed certificates we create: 397 days, the most that browsers and
 * public CAs accept for a leaf since 2020. Rotate with `gpufabric cert` (workers that pin the
 * fingerprint need the new one; workers given the certificate as their CA need the new file).
 */
export const SELF_SIGNED_VALIDITY_DAYS = 397

/** Creates a self-signed EC P-256 certificate for this host (localhost, loopback and the hostname). */
export async function createSelfSignedCertificate(
  extraNames: readonly string[] = [],
): Promise<CertificatePair> {
  const now = new Date()
  const names = [...new Set(['localhost', hostname(), ...extraNames])]
  const ips = ['127.0.0.1', '::1']
  const result = await generate([{ name: 'commonName', value: 'gpufabric' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    // A minute back for clocks a little behind; the whole validity stays within the limit.
    notBeforeDate: new Date(now.getTime() - 60_000),
    notAfterDate: new Date(now.getTime() - 60_000 + SELF_SIGNED_VALIDITY_DAYS * 24 * 3600_000),
    extensions: [
      { name: 'basicConstraints', cA: true },
      { name: 'keyUsage', digitalSignature: true, keyCertSign: true },
      { name: 'extKeyUsage', serverAuth: true },
      {
        name: 'subjectAltName',
        altNames: [
          ...names.map((value) => ({ type: 2 as const, value })),
          ...ips.map((ip) => ({ type: 7 as const, ip })),
        ],
      },
    ],
  })
  return { cert: result.cert, key: result.private, fingerprint256: fingerprintOf(result.cert) }
}

/** SHA-256 fingerprint of the first certificate in a PEM, as `AA:BB:...`. */
export function fingerprintOf(pem: string): string {
  return new X509Certificate(pem).fingerprint256
}

/**
 * Loads the certificate and key from the given paths, or when none are given, from
 * `cert.pem`/`key.pem` in the data dir, creating them there on first start.
 */
export async function loadOrCreateCertificate(options: {
  dataDir: string
  certPath?: string | undefined
  keyPath?: string | undefined
}): Promise<CertificatePair & { created: boolean }> {
  if (options.certPath !== undefined || options.keyPath !== undefined) {
    if (options.certPath === undefined || options.keyPath === undefined) {
      throw new FabricError(
        ErrorCodes.CONFIG,
        '--proxy-cert-chain-path and --proxy-private-key-path must be given together',
      )
    }
    return { ...(await readPair(options.certPath, options.keyPath)), created: false }
  }
  const certPath = join(options.dataDir, 'cert.pem')
  const keyPath = join(options.dataDir, 'key.pem')
  if (existsSync(certPath) && existsSync(keyPath))
    return { ...(await readPair(certPath, keyPath)), created: false }
  const pair = await writeSelfSignedCertificate(options.dataDir)
  return { ...pair, created: true }
}

/** Creates `cert.pem` and `key.pem` (mode 0600) in `dir`. */
export async function writeSelfSignedCertificate(
  dir: string,
  extraNames: readonly string[] = [],
): Promise<CertificatePair> {
  await mkdir(dir, { recursive: true })
  const pair = await createSelfSignedCertificate(extraNames)
  const certPath = join(dir, 'cert.pem')
  const keyPath = join(dir, 'key.pem')
  await writeFile(keyPath, pair.key, { mode: 0o600 })
  await chmod(keyPath, 0o600)
  await writeFile(certPath, pair.cert)
  return { ...pair, certPath, keyPath }
}

async function readPair(certPath: string, keyPath: string): Promise<CertificatePair> {
  try {
    const [cert, key] = await Promise.all([readFile(certPath, 'utf8'), readFile(keyPath, 'utf8')])
    return { cert, key, fingerprint256: fingerprintOf(cert), certPath, keyPath }
  } catch (cause) {
    throw new FabricError(ErrorCodes.CERTIFICATE, `cannot read certificate ${certPath} / key ${keyPath}`, {
      cause,
    })
  }
}

/** How a worker decides to trust the server's certificate. Never silently. */
export interface ServerTrust {
  /** PEM bundle: CA certificates, or the server's own (self-signed) certificate. */
  readonly ca?: string | undefined
  /** Pinned SHA-256 fingerprint(s) of the server certificate (`AA:BB:..`, case and colons optional). */
  readonly fingerprints?: readonly string[] | undefined
}

/** Normalises a fingerprint for comparison: upper-case hex without separators. */
export function normaliseFingerprint(value: string): string {
  return value
    .replace(/^sha256[:/]?/i, '')
    .replace(/[^0-9a-f]/gi, '')
    .toUpperCase()
}

/** Options for {@link connectTls}. */
export interface ConnectTlsOptions {
  readonly host: string
  readonly port: number
  readonly trust: ServerTrust
  readonly alpn?: readonly string[]
  readonly timeoutMs: number
  readonly signal?: AbortSignal | undefined
  /** Local address to dial from (a host with several addresses). */
  readonly localAddress?: string | undefined
}

/**
 * Dials the server over TLS 1.3 and verifies its certificate under the given trust:
 * - with `ca`: the chain must verify against it; a leaf that is itself in the bundle is trusted
 *   whatever address was dialled (the user handed us that exact certificate);
 * - with `fingerprints`: the leaf must match one of them, checked before any byte is sent;
 * - with neither: the system's CA store and the usual host name check.
 * The returned socket is verified; a refusal rejects with a CERTIFICATE FabricError.
 */
export function connectTls(options: ConnectTlsOptions): Promise<TLSSocket> {
  const { trust } = options
  const pinned = new Set((trust.fingerprints ?? []).map(normaliseFingerprint))
  const bundled = new Set(
    trust.ca === undefined ? [] : splitPem(trust.ca).map((p) => normaliseFingerprint(fingerprintOf(p))),
  )
  // With only a pin there is no CA to build a chain from: the pin itself is the check, done below.
  const pinOnly = pinned.size > 0 && trust.ca === undefined
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      ...TLS13,
      host: options.host,
      port: options.port,
      ...(trust.ca === undefined ? {} : { ca: trust.ca }),
      ...(options.alpn === undefined ? {} : { ALPNProtocols: [...options.alpn] }),
      rejectUnauthorized: !pinOnly,
      ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
      ...(isIp(options.host) ? {} : { servername: options.host }),
      checkServerIdentity(host: string, cert: PeerCertificate): Error | undefined {
        if (bundled.has(normaliseFingerprint(cert.fingerprint256 ?? ''))) return undefined
        return checkServerIdentity(host, cert)
      },
    })
    socket.setNoDelay(true)
    const timer = setTimeout(
      () =>
        fail(
          new FabricError(
            ErrorCodes.TIMEOUT_CONNECT,
            `connect to ${options.host}:${options.port} timed out`,
            { retryable: true },
          ),
        ),
      options.timeoutMs,
    )
    const onAbort = () => fail(new FabricError(ErrorCodes.ABORTED, 'connect aborted'))
    options.signal?.addEventListener('abort', onAbort, { once: true })
    const cleanup = () => {
      clearTimeout(timer)
      options.signal?.removeEventListener('abort', onAbort)
      socket.off('error', onError)
    }
    const fail = (err: Error) => {
      cleanup()
      socket.destroy()
      reject(err)
    }
    const onError = (err: Error & { code?: string }) => {
      const certificateProblem =
        /CERT|SELF_SIGNED|UNABLE_TO|ERR_TLS_CERT|HOSTNAME/i.test(err.code ?? '') || isFabricCertificate(err)
      fail(
        certificateProblem
          ? new FabricError(
              ErrorCodes.CERTIFICATE,
              `refusing the server certificate at ${options.host}:${options.port} (${err.message}); ` +
                'pass --cert-chain-path <server cert or CA> or --server-fingerprint <sha256 printed by the server>',
              { cause: err },
            )
          : new FabricError(
              ErrorCodes.TIMEOUT_CONNECT,
              `cannot connect to ${options.host}:${options.port}: ${err.message}`,
              {
                cause: err,
                retryable: true,
              },
            ),
      )
    }
    socket.once('error', onError)
    socket.once('secureConnect', () => {
      if (pinOnly) {
        const fp = normaliseFingerprint(socket.getPeerCertificate().fingerprint256 ?? '')
        if (!pinned.has(fp)) {
          fail(
            new FabricError(
              ErrorCodes.CERTIFICATE,
              `server certificate at ${options.host}:${options.port} does not match the pinned fingerprint`,
            ),
          )
          return
        }
      }
      cleanup()
      resolve(socket)
    })
  })
}

function isFabricCertificate(err: unknown): boolean {
  return err instanceof FabricError && err.code === ErrorCodes.CERTIFICATE
}

function splitPem(bundle: string): string[] {
  return bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':')
}
