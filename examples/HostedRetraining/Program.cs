// A worker service that serves scoring requests from LoopRpt's model store while the retraining service trains,
// validates and promotes new model versions in the background (docs/hosting.md).
//
//   dotnet run --project examples/HostedRetraining                    # until Ctrl+C (shutdown checkpoints a running round)
//   dotnet run --project examples/HostedRetraining -- --Demo:RunSeconds=90
//
// Files go under ./hosted-retraining-run/ (relative to the working directory): models/v0001..., data/*.txt.
using HostedRetraining;
using LoopRpt.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Args = args, ContentRootPath = AppContext.BaseDirectory });
builder.Services.AddLoopRptRetraining(builder.Configuration.GetSection("LoopRpt"));
builder.Services.Configure<DemoOptions>(builder.Configuration.GetSection("Demo"));
builder.Services.AddHostedService<DataFeeder>();        // new data lands in the folder now and then
builder.Services.AddHostedService<ScoringTraffic>();    // concurrent scoring requests, all the time
await builder.Build().RunAsync();
