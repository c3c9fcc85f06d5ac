;; Bodies alone, for a gateway: the request body is held (paused, proxy-wasm's
;; StopIterationAndBuffer) until its end, then replaced by `replaced`; each piece of the
;; response body is followed by a copy of itself.
(module
  (import "env" "proxy_get_buffer_bytes" (func $read (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $write (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  ;; a bump allocator over the second page that starts over when the page is full
  (func (export "malloc") (param $size i32) (result i32)
    (local $at i32)
    (if (i32.gt_u (i32.add (global.get $heap) (local.get $size)) (i32.const 131072))
      (then (global.set $heap (i32.const 65536))))
    (local.set $at (global.get $heap))
    (global.set $heap
      (i32.and (i32.add (i32.add (local.get $at) (local.get $size)) (i32.const 7)) (i32.const -8)))
    (local.get $at))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (data (i32.const 48) "replaced")
  (func (export "proxy_on_request_body") (param i32) (param $size i32) (param $end i32) (result i32)
    (if (i32.eqz (local.get $end)) (then (return (i32.const 1))))
    (drop (call $write (i32.const 0) (i32.const 0) (local.get $size) (i32.const 48) (i32.const 8)))
    (i32.const 0))
  (func (export "proxy_on_response_body") (param i32) (param $size i32) (param i32) (result i32)
    (drop (call $read (i32.const 1) (i32.const 0) (local.get $size) (i32.const 1024) (i32.const 1028)))
    (drop
      (call $write (i32.const 1) (local.get $size) (i32.const 0)
        (i32.load (i32.const 1024)) (i32.load (i32.const 1028))))
    (i32.const 0))
)
