#!/usr/bin/env escript
%% -*- erlang -*-
%% Puts the EEP 48 documentation of camlbeam's modules into their .beam files, as the
%% "Docs" chunk. That is where erl's h/1,2 (code:get_doc/1) and iex's h (Elixir's
%% Code.fetch_docs/1) look first, so the documentation goes wherever the beams go:
%% rebar3's _build, a Mix project's _build, a release. (A doc/chunks directory beside
%% ebin would be read too, but neither rebar3 nor Mix puts one in the build directory.)
%%
%% rebar3 runs this after it compiles the application (rebar.config, post_hooks), in the
%% application's directory. The beams are in $REBAR_BARE_COMPILER_OUTPUT_DIR/ebin when
%% Mix builds camlbeam as a dependency (rebar3 bare compile), else in
%% $REBAR_BUILD_DIR/lib/camlbeam/ebin, or $REBAR_CHECKOUTS_OUT_DIR/camlbeam/ebin when
%% camlbeam is a checkout of another project (docs/getting-started.md). The chunks are edoc's (its chunk doclet), from the
%% comments `rebar3 edoc' makes the HTML documentation of. Only beams without a "Docs"
%% chunk, the ones rebar3 has just compiled, are rewritten: a build with nothing to do
%% stays quick.
-mode(compile).

main([]) ->
    OutDir = out_dir(),
    Ebin = filename:join(OutDir, "ebin"),
    Undocumented = [Beam || Beam <- filelib:wildcard(filename:join(Ebin, "*.beam")),
                            not has_docs(Beam)],
    case Undocumented of
        [] -> ok;
        _ -> embed(Undocumented, filename:join(OutDir, "doc_chunks.tmp"))
    end;
main(_) ->
    io:format(standard_error, "usage: embed_doc_chunks.escript (run by rebar3, see rebar.config)~n", []),
    halt(2).

out_dir() ->
    case os:getenv("REBAR_BARE_COMPILER_OUTPUT_DIR", "") of
        "" ->
            %% As the project, or a dependency, under lib/; as a checkout of another
            %% project (_checkouts), under checkouts/. The one rebar3 has just compiled
            %% into is the one with the newest beam.
            Candidates = [filename:join(Dir, "camlbeam")
                          || Dir <- [filename:join(env("REBAR_BUILD_DIR"), "lib"),
                                     os:getenv("REBAR_CHECKOUTS_OUT_DIR", "")],
                             Dir =/= ""],
            Built = [{filelib:last_modified(filename:join([Dir, "ebin", "ocaml.beam"])), Dir}
                     || Dir <- Candidates],
            %% last_modified/1 is 0 for a file that is not there, below any date.
            case lists:reverse(lists:sort(Built)) of
                [{Time, Dir} | _] when Time =/= 0 -> Dir;
                _ -> fail("no ocaml.beam in ~tp: has rebar3 compiled camlbeam?", [Candidates])
            end;
        Mix ->
            Mix
    end.

env(Name) ->
    case os:getenv(Name, "") of
        "" -> fail("~ts is not set: this script runs as a rebar3 hook", [Name]);
        Value -> Value
    end.

has_docs(Beam) ->
    case beam_lib:chunks(Beam, ["Docs"]) of
        {ok, _} -> true;
        {error, beam_lib, {missing_chunk, _, _}} -> false;
        {error, beam_lib, Reason} -> fail("cannot read ~ts: ~tp", [Beam, Reason])
    end.

embed(Beams, Work) ->
    _ = file:del_dir_r(Work),
    ok = filelib:ensure_dir(filename:join(Work, "edoc")),
    try
        Options = [{doclet, edoc_doclet_chunks}, {layout, edoc_layout_chunks},
                   {preprocess, true}, {dir, Work}],
        case catch edoc:application(camlbeam, ".", Options) of
            ok -> ok;
            Failed -> fail("edoc could not document the application: ~tp", [Failed])
        end,
        Chunks = maps:from_list(
                   [{filename:basename(Chunk, ".chunk"), Chunk}
                    || Chunk <- filelib:wildcard(filename:join([Work, "**", "*.chunk"]))]),
        lists:foreach(
          fun(Beam) ->
                  case maps:find(filename:basename(Beam, ".beam"), Chunks) of
                      {ok, Chunk} -> add_chunk(Beam, Chunk);
                      error -> fail("edoc made no documentation for ~ts", [Beam])
                  end
          end,
          Beams)
    after
        file:del_dir_r(Work)
    end.

%% The .chunk file holds term_to_binary of the docs_v1 term, which is also what the
%% beam's "Docs" chunk holds.
add_chunk(Beam, ChunkFile) ->
    {ok, Docs} = file:read_file(ChunkFile),
    {ok, _Module, Chunks} = beam_lib:all_chunks(Beam),
    {ok, Binary} = beam_lib:build_module([{"Docs", Docs} | lists:keydelete("Docs", 1, Chunks)]),
    ok = file:write_file(Beam, Binary).

fail(Format, Args) ->
    io:format(standard_error, "embed_doc_chunks: " ++ Format ++ "~n", Args),
    halt(1).
