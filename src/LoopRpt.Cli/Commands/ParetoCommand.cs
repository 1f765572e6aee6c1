using System.CommandLine;
using LoopRpt.Cli.Input;
using LoopRpt.Cli.Models;
using LoopRpt.Evaluation;

namespace LoopRpt.Cli.Commands;

/// <summary>
/// <c>looprpt pareto</c>: sweeps the Q-exit threshold q for one or more models (e.g. before and after LoopRPT) and writes
/// pareto.md (one table per bucket: accuracy at each loop step and accuracy @ mean exit step per q, a column per model),
/// pareto.csv and pareto.svg (accuracy against compute).
/// </summary>
internal static class ParetoCommand
{
    public static Command Create()
    {
        var models = new Option<string[]>("--model", "-m")
        {
            Description = "Model directory; repeat to compare models (the first one defines the entropy buckets).", Required = true,
            Arity = ArgumentArity.OneOrMore,
        };
        var labels = new Option<string?>("--labels") { Description = "Comma-separated labels of the models (default: directory names)." };
        var input = CommonOptions.Input();
        var column = CommonOptions.Column();
        var docs = CommonOptions.Documents();
        var evaluation = new EvaluationOptionSet(LoopEvaluationOptions.Defaults.QValues);
        var outDir = new Option<string>("--out-dir", "-o") { Description = "Folder for pareto.md, pareto.csv and pareto.svg.", Required = true };
        var title = new Option<string>("--title") { Description = "Plot title.", DefaultValueFactory = _ => "Accuracy vs. mean exit step (Q-exit sweep)" };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var cmd = new Command("pareto", "Sweep the exit threshold q: accuracy against mean exit steps, as a table, CSV and an SVG plot.")
        { models, labels, input, column, docs, outDir, title, device, threads };
        evaluation.AddTo(cmd);
        cmd.SetAction(pr =>
        {
            var ctx = CliContext.Require();
            var (options, s, b, max) = evaluation.Read(pr);
            var qs = options.QValues;
            var dirs = pr.GetRequiredValue(models);
            var names = pr.GetValue(labels)?.Split(',', StringSplitOptions.TrimEntries) ?? dirs.Select(d => Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(d)))).ToArray();
            if (names.Length != dirs.Length) throw CliException.Usage($"--labels gives {names.Length} labels for {dirs.Length} models.");
            var dir = OutputPaths.Folder(pr.GetRequiredValue(outDir), "--out-dir");
            var texts = Corpus.Read(pr.GetRequiredValue(input), pr.GetValue(docs), pr.GetValue(column));
            Devices.SetThreads(pr.GetValue(threads));
            var sessions = new List<ModelSession>();
            try
            {
                foreach (var d in dirs) sessions.Add(ModelSession.Load(d, pr.GetValue(device)!, "float32", ctx.Error));
                foreach (var x in sessions) CommonOptions.FitsContext(s, x.Model.Config.MaxPositionEmbeddings);
                var tokens = EvaluationInputs.Stream(texts, sessions[0].RequireCodec(), sessions[0].Model.Config.VocabSize, max, s);
                var evaluator = new LoopEvaluator(options);
                var evals = sessions.Select((x, i) => evaluator.Evaluate(x.Model, LoopEvaluator.Windows(tokens, b, s), sessions[0].Model, names[i])).ToList();
                Directory.CreateDirectory(dir);
                var markdown = LoopEvaluation.CompareMarkdownByBucket(evals, qs);
                File.WriteAllText(Path.Combine(dir, "pareto.md"), $"# {pr.GetValue(title)}\n\n{markdown}\n![pareto](pareto.svg)\n");
                File.WriteAllText(Path.Combine(dir, "pareto.csv"), LoopEvaluation.ToCsv(evals));
                ParetoPlot.WriteSvg(Path.Combine(dir, "pareto.svg"), evals, pr.GetValue(title)!);
                ctx.Output.Write(markdown);
                ctx.Output.WriteLine($"pareto models={evals.Count} tokens={evals[0].Buckets[0].Tokens} thresholds={qs.Count} out={dir} files=pareto.md,pareto.csv,pareto.svg");
                return ExitCodes.Success;
            }
            finally
            {
                foreach (var x in sessions) x.Dispose();
            }
        });
        return cmd;
    }
}
