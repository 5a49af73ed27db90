export { ControlChannel, type ControlChannelOptions } from './channel.js'
export { decodeMessage, encodeMessage } from './codec.js'
export { encodeFrame, type Frame, FrameDecoder, PROTOCOL_VERSION } from './frame.js'
export * from './messages.js'
