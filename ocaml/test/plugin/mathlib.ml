let rec fib n = if n < 2 then n else fib (n - 1) + fib (n - 2)
let () = Erl.export "fib" Erl.Conv.(int @-> returning int) fib
