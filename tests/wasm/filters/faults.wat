;; Misbehaves on request: `x-trap` traps (after logging why), `x-loop` never returns,
;; `x-grow` grows memory a page at a time until refused, then traps as an allocator
;; would; `x-bad-pointer` passes a pointer past its memory to a hostcall and adds
;; `x-status` with the status it got (as one byte). Otherwise it continues.
(module
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
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
  (data (i32.const 0) "x-trap")
  (data (i32.const 16) "x-loop")
  (data (i32.const 32) "x-grow")
  (data (i32.const 48) "x-bad-pointer")
  (data (i32.const 64) "x-status")
  (data (i32.const 80) "about to trap")
  (func $has (param $name i32) (param $size i32) (result i32)
    (i32.eqz
      (call $get (i32.const 0) (local.get $name) (local.get $size) (i32.const 1024) (i32.const 1028))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (call $has (i32.const 0) (i32.const 6))
      (then
        (drop (call $log (i32.const 4) (i32.const 80) (i32.const 13)))
        unreachable))
    (if (call $has (i32.const 16) (i32.const 6))
      (then (loop $forever (br $forever))))
    (if (call $has (i32.const 32) (i32.const 6))
      (then
        (block $refused
          (loop $more
            (br_if $refused (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
            (br $more)))
        unreachable))
    (if (call $has (i32.const 48) (i32.const 13))
      (then
        (i32.store8 (i32.const 1040)
          (call $get (i32.const 0) (i32.const -16) (i32.const 8) (i32.const 1024) (i32.const 1028)))
        (drop (call $add (i32.const 0) (i32.const 64) (i32.const 8) (i32.const 1040) (i32.const 1)))))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
)
