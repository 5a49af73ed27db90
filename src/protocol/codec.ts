import { Packr } from 'msgpackr'
import { ErrorCodes, FabricError } from '../errors/index.js'
import { encodeFrame, type Frame } from './frame.js'
import { type ControlMessage, type MessageOf, type MessageTypeId, schemas } from './messages.js'

// Plain msgpack: no records/structures, so any msgpack implementation can speak the protocol.
const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' })

/** Encodes a control message into one frame. */
export function encodeMessage<T extends MessageTypeId>(type: T, body: MessageOf<T>): Buffer {
  return encodeFrame(type, packr.pack(body))
}

/** Decodes and validates a frame; throws a PROTOCOL FabricError for anything malformed. */
export function decodeMessage(frame: Frame): ControlMessage {
  const schema = schemas[frame.type as MessageTypeId]
  if (schema === undefined) throw new FabricError(ErrorCodes.PROTOCOL, `unknown message type ${frame.type}`)
  let raw: unknown
  try {
    raw = packr.unpack(frame.payload)
  } catch (cause) {
    throw new FabricError(ErrorCodes.PROTOCOL, `message type ${frame.type} is not valid msgpack`, { cause })
  }
  const parsed = schema.safeParse(raw)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new FabricError(
      ErrorCodes.PROTOCOL,
      `invalid message type ${frame.type}: ${issue?.path.join('.') || '(root)'} ${issue?.message ?? ''}`.trim(),
    )
  }
  return { type: frame.type, body: parsed.data } as ControlMessage
}
