;; Answers every request itself: 403, body `no entry`, header `x-why: wasm`, details
;; `denied_by_wasm`.
(module
  (import "env" "proxy_send_local_response"
    (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
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
  (data (i32.const 0) "denied_by_wasm")
  (data (i32.const 32) "no entry")
  ;; the serialized map {"x-why": "wasm"}: a count, then each key's and value's size,
  ;; then the keys and values, each ending in NUL
  (data (i32.const 64) "\01\00\00\00\05\00\00\00\04\00\00\00x-why\00wasm\00")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop
      (call $reply (i32.const 403) (i32.const 0) (i32.const 14) (i32.const 32) (i32.const 8)
        (i32.const 64) (i32.const 23) (i32.const -1)))
    (i32.const 1))
)
