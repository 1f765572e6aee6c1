using LoopRpt.Tests.MLNet;

namespace LoopRpt.Tests;

/// <summary>
/// Entry point of the test assembly when a test starts it as a child process (`dotnet LoopRpt.Tests.dll VERB ...`).
/// The test host never calls it; it replaces the SDK's generated empty Main (GenerateProgramFile=false).
/// </summary>
public static class ChildProcess
{
    /// <summary>`dotnet LoopRpt.Tests.dll looprpt ARGS`: runs the `looprpt` tool in a separate process.</summary>
    public const string LooprptVerb = "looprpt";

    public static int Main(string[] args)
    {
        switch (args)
        {
            case [ColdProcessChild.Verb, var zip, var data]:
                ColdProcessChild.ScoreZip(zip, data);
                return 0;
            case [LooprptVerb, .. var rest]:
                return LoopRpt.Cli.CliApp.Run(rest, Console.Out, Console.Error);   // the tool itself, in a process of its own
            default:
                Console.Error.WriteLine($"usage: dotnet LoopRpt.Tests.dll {ColdProcessChild.Verb} MODEL.zip DATA.tsv (a child process of ColdProcessTests), or {LooprptVerb} ARGS");
                return 2;
        }
    }
}
