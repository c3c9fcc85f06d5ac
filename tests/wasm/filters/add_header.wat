;; Adds `x-wasm: 1` to every request's headers (bench_wasm.py's header edit).
(module
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
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
  (data (i32.const 0) "x-wasm")
  (data (i32.const 16) "1")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 0) (i32.const 0) (i32.const 6) (i32.const 16) (i32.const 1)))
    (i32.const 0))
)
