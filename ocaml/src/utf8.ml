let for_all p s =
  let n = String.length s in
  let byte i = Char.code s.[i] in
  let cont i = i < n && byte i land 0xc0 = 0x80 in
  let low i = byte i land 0x3f in
  let rec from i =
    if i >= n then true
    else
      let c = byte i in
      if c < 0x80 then p c && from (i + 1)
      else if c < 0xc2 then false
      else if c < 0xe0 then
        cont (i + 1) && p (((c land 0x1f) lsl 6) lor low (i + 1)) && from (i + 2)
      else if c < 0xf0 then
        cont (i + 1)
        && cont (i + 2)
        && (let u = ((c land 0x0f) lsl 12) lor (low (i + 1) lsl 6) lor low (i + 2) in
            u >= 0x800 && (u < 0xd800 || u > 0xdfff) && p u)
        && from (i + 3)
      else if c < 0xf5 then
        cont (i + 1)
        && cont (i + 2)
        && cont (i + 3)
        && (let u =
              ((c land 0x07) lsl 18)
              lor (low (i + 1) lsl 12)
              lor (low (i + 2) lsl 6)
              lor low (i + 3)
            in
            u >= 0x10000 && u <= 0x10ffff && p u)
        && from (i + 4)
      else false
  in
  from 0
