(* n-body (the Computer Language Benchmarks Game): a symplectic integrator of the
   Jovian planets; [run steps] is the system's energy after [steps] steps of 0.01.
   Flat float records, mutated in place: the idiomatic fast OCaml of the game. *)

let pi = 3.141592653589793
let solar_mass = 4. *. pi *. pi
let days_per_year = 365.24

type body = {
  mutable x : float;
  mutable y : float;
  mutable z : float;
  mutable vx : float;
  mutable vy : float;
  mutable vz : float;
  mass : float;
}

let advance bodies dt =
  let n = Array.length bodies - 1 in
  for i = 0 to n do
    let b = bodies.(i) in
    for j = i + 1 to n do
      let b' = bodies.(j) in
      let dx = b.x -. b'.x and dy = b.y -. b'.y and dz = b.z -. b'.z in
      let dist2 = (dx *. dx) +. (dy *. dy) +. (dz *. dz) in
      let mag = dt /. (dist2 *. sqrt dist2) in
      b.vx <- b.vx -. (dx *. b'.mass *. mag);
      b.vy <- b.vy -. (dy *. b'.mass *. mag);
      b.vz <- b.vz -. (dz *. b'.mass *. mag);
      b'.vx <- b'.vx +. (dx *. b.mass *. mag);
      b'.vy <- b'.vy +. (dy *. b.mass *. mag);
      b'.vz <- b'.vz +. (dz *. b.mass *. mag)
    done
  done;
  for i = 0 to n do
    let b = bodies.(i) in
    b.x <- b.x +. (dt *. b.vx);
    b.y <- b.y +. (dt *. b.vy);
    b.z <- b.z +. (dt *. b.vz)
  done

let energy bodies =
  let e = ref 0. in
  let n = Array.length bodies - 1 in
  for i = 0 to n do
    let b = bodies.(i) in
    e := !e +. (0.5 *. b.mass *. ((b.vx *. b.vx) +. (b.vy *. b.vy) +. (b.vz *. b.vz)));
    for j = i + 1 to n do
      let b' = bodies.(j) in
      let dx = b.x -. b'.x and dy = b.y -. b'.y and dz = b.z -. b'.z in
      e := !e -. (b.mass *. b'.mass /. sqrt ((dx *. dx) +. (dy *. dy) +. (dz *. dz)))
    done
  done;
  !e

let offset_momentum bodies =
  let px = ref 0. and py = ref 0. and pz = ref 0. in
  Array.iter
    (fun b ->
      px := !px +. (b.vx *. b.mass);
      py := !py +. (b.vy *. b.mass);
      pz := !pz +. (b.vz *. b.mass))
    bodies;
  let sun = bodies.(0) in
  sun.vx <- -. !px /. solar_mass;
  sun.vy <- -. !py /. solar_mass;
  sun.vz <- -. !pz /. solar_mass

let planet x y z vx vy vz mass =
  {
    x;
    y;
    z;
    vx = vx *. days_per_year;
    vy = vy *. days_per_year;
    vz = vz *. days_per_year;
    mass = mass *. solar_mass;
  }

(* A fresh system for every run: runs do not depend on each other. *)
let bodies () =
  [|
    { x = 0.; y = 0.; z = 0.; vx = 0.; vy = 0.; vz = 0.; mass = solar_mass };
    planet 4.84143144246472090e+00 (-1.16032004402742839e+00) (-1.03622044471123109e-01)
      1.66007664274403694e-03 7.69901118419740425e-03 (-6.90460016972063023e-05)
      9.54791938424326609e-04;
    planet 8.34336671824457987e+00 4.12479856412430479e+00 (-4.03523417114321381e-01)
      (-2.76742510726862411e-03) 4.99852801234917238e-03 2.30417297573763929e-05
      2.85885980666130812e-04;
    planet 1.28943695621391310e+01 (-1.51111514016986312e+01) (-2.23307578892655734e-01)
      2.96460137564761618e-03 2.37847173959480950e-03 (-2.96589568540237556e-05)
      4.36624404335156298e-05;
    planet 1.53796971148509165e+01 (-2.59193146099879641e+01) 1.79258772950371181e-01
      2.68067772490389322e-03 1.62824170038242295e-03 (-9.51592254519715870e-05)
      5.15138902046611451e-05;
  |]

let run steps =
  let b = bodies () in
  offset_momentum b;
  for _ = 1 to steps do
    advance b 0.01
  done;
  energy b
